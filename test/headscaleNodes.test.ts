import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { nodeAddressProvider } from "../components/platform/headscale";
import { FakeHeadscaleApi } from "./support/fakeHeadscaleApi";

// How Pulumi finds a node in Headscale after it joins, against a fake that names nodes as
// Headscale 0.29 does (a second `hm-prod-2` is given `hm-prod-2-1`).
const API_KEY = `hskey-api-ABCDEF-HIJ_L-${"f6".repeat(32)}`;
const fake = new FakeHeadscaleApi(API_KEY);
before(() => fake.start());
after(() => fake.stop());

const p = nodeAddressProvider as Required<typeof nodeAddressProvider>;
const TAG = "tag:hm-node";
const find = (hostname: string, notBefore: string, timeoutMs = 0) => p.create({ apiUrl: fake.url, apiKey: API_KEY, hostname, tag: TAG, notBefore, timeoutMs });

describe("Headscale node address", () => {
  test("the fake names a second node of the same hostname as Headscale does", () => {
    const a = fake.join("hm-x", [TAG], "100.64.9.1");
    const b = fake.join("hm-x", [TAG], "100.64.9.2");
    const c = fake.join("hm-x", [TAG], "100.64.9.3");
    assert.deepEqual([a, b, c].map((n) => [n.name, n.givenName]), [["hm-x", "hm-x"], ["hm-x", "hm-x-1"], ["hm-x", "hm-x-2"]]);
  });

  test("a replaced node is found by its hostname while the old node is still listed (given name hm-prod-2-1)", async () => {
    fake.join("hm-prod-2", [TAG], "100.64.0.2", "2026-03-01T10:00:00Z");
    const dropletCreated = "2026-06-01T12:00:00Z";
    const replacement = fake.join("hm-prod-2", [TAG], "100.64.0.9", "2026-06-01T12:03:00Z");
    assert.equal(replacement.givenName, "hm-prod-2-1");
    const { id, outs } = await find("hm-prod-2", dropletCreated);
    assert.equal(id, replacement.id);
    assert.equal(outs.ipv4, "100.64.0.9");
  });

  test("the newest of several joins after the droplet was created wins; older ones never count", async () => {
    fake.join("hm-prod-3", [TAG], "100.64.0.3", "2026-06-01T12:01:00Z");
    const newest = fake.join("hm-prod-3", [TAG], "100.64.0.13", "2026-06-01T12:05:00Z");
    assert.equal((await find("hm-prod-3", "2026-06-01T12:00:00Z")).outs.ipv4, "100.64.0.13");
    assert.equal(newest.givenName, "hm-prod-3-1");
    await assert.rejects(find("hm-prod-3", "2026-06-02T00:00:00Z", 100), /has not joined/);
  });

  test("a node with another hostname, or without the tag, is never taken", async () => {
    fake.join("hm-prod-4-1", [TAG], "100.64.0.41", "2026-06-01T12:01:00Z");
    fake.join("hm-prod-4", [], "100.64.0.42", "2026-06-01T12:01:00Z");
    await assert.rejects(find("hm-prod-4", "2026-06-01T12:00:00Z", 100), /has not joined/);
  });
});
