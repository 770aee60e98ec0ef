import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type * as pulumi from "@pulumi/pulumi";
import { handoverProvider, nodeAddressProvider, sealingKeyProvider } from "../components/platform/headscale";
import { preAuthKeyProvider } from "../components/platform/headscaleKeys";
import { DynamicProviderHost, engineDecision, serializeProvider } from "./support/dynamicProviderHost";

// Every dynamic provider of the program, run by Pulumi's real dynamic-provider host as the engine
// runs it after an edit of our code or an SDK bump: the stored `__provider` is the old
// serialization, the new inputs carry a changed one. Nothing may be replaced, and nothing the
// resource holds may be lost (an Update without `update` keeps only `{__provider}`).
let host: DynamicProviderHost;
before(async () => {
  host = await DynamicProviderHost.start();
});
after(() => host?.stop());

const API_KEY = `hskey-api-ABCDEFGHIJKL-${"d4".repeat(32)}`;
/** The same provider, serialized after an edit (a comment is enough to change the text). */
const edited = (text: string) => `${text}\n// edited: a new version of the program\n`;

interface Case {
  name: string;
  provider: pulumi.dynamic.ResourceProvider;
  /** Inputs as the program registers them (without __provider). */
  inputs: Record<string, unknown>;
  /** Outputs as state holds them after create (without __provider); undefined: create through the host. */
  outputs?: Record<string, unknown>;
  /** Outputs that must survive. */
  keep: string[];
}

const cases: Case[] = [
  { name: "headscale:SealingKey", provider: sealingKeyProvider, inputs: {}, keep: ["publicKeyPem", "privateKeyPem"] },
  {
    name: "headscale:ApiKeyHandover",
    provider: handoverProvider,
    inputs: { blobUrl: "http://192.0.2.10/sealed-api-key.bin", privateKeyPem: "pem", timeoutMs: 1_200_000, apiUrl: "https://hs.example.org" },
    outputs: { blobUrl: "http://192.0.2.10/sealed-api-key.bin", apiUrl: "https://hs.example.org", apiKey: API_KEY, expiration: new Date(Date.now() + 80 * 86400_000).toISOString() },
    keep: ["apiKey"],
  },
  {
    name: "headscale:NodeAddress",
    provider: nodeAddressProvider,
    inputs: { apiUrl: "https://hs.example.org", apiKey: API_KEY, hostname: "hm-prod-1", tag: "tag:hm-node", notBefore: "2026-01-01T00:00:00Z", timeoutMs: 600_000 },
    outputs: { apiUrl: "https://hs.example.org", apiKey: API_KEY, hostname: "hm-prod-1", tag: "tag:hm-node", notBefore: "2026-01-01T00:00:00Z", timeoutMs: 600_000, ipv4: "100.64.0.7" },
    keep: ["ipv4"],
  },
  {
    name: "headscale:PreAuthKey",
    provider: preAuthKeyProvider,
    inputs: { apiUrl: "https://hs.example.org", apiKey: API_KEY, tags: ["tag:hm-node"], ttlSeconds: 3600 },
    outputs: { apiUrl: "https://hs.example.org", apiKey: API_KEY, tags: ["tag:hm-node"], ttlSeconds: 3600, key: `hskey-auth-abcdefabcdef-${"e5".repeat(32)}`, expiration: "2026-01-01T01:00:00Z", expired: false },
    keep: ["key", "expiration"],
  },
];

describe("dynamic providers after an edit of the program or an SDK bump (real dynamic-provider host)", () => {
  for (const c of cases) {
    test(`${c.name}: a changed serialized provider neither replaces nor updates, and an Update keeps the outputs`, async () => {
      const text = await serializeProvider(c.provider);
      const urn = `urn:pulumi:prod::hardened-matrix::pulumi-nodejs:dynamic/${c.name}::x`;
      const oldInputs = { ...c.inputs, __provider: text };
      let id = "1";
      let olds: Record<string, unknown>;
      if (c.outputs) olds = { ...c.outputs, __provider: text };
      else ({ id, outs: olds } = await host.create(urn, oldInputs));
      for (const k of c.keep) assert.ok(olds[k], `${k} after create`);

      const news = { ...c.inputs, __provider: edited(text) };
      const answer = await host.diff(urn, id, oldInputs, olds, news);
      assert.deepEqual(answer.replaces, [], "nothing replaced");
      assert.equal(engineDecision(answer, oldInputs, news), "same", `the engine would plan no step (diff answered ${answer.changes})`);

      // Should the engine run an Update anyway (e.g. with another input changed), nothing held is lost.
      const outs = await host.update(urn, id, oldInputs, olds, news);
      for (const k of c.keep) assert.deepEqual(outs[k], olds[k], `${k} kept by Update`);
    });
  }

  test("headscale:SealingKey: a state that already lost its pair gets a new one (replace), not an empty update", async () => {
    const text = await serializeProvider(sealingKeyProvider);
    const answer = await host.diff("urn:pulumi:prod::hm::pulumi-nodejs:dynamic/headscale:SealingKey::s", "1", { __provider: text }, { __provider: text }, { __provider: edited(text) });
    assert.deepEqual(answer.replaces, ["privateKeyPem"]);
  });
});
