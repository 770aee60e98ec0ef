import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { constants, publicEncrypt } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { deployerJoinCommand, deployerOnTailnetCheck, fetchSealedApiKey, HeadscaleServer } from "../components/platform/headscale";
import { generateSealingKeyPair } from "../components/render/headscaleBootstrap";
import { runUnderMocks, type ProgramRun } from "../plan/mockRuntime";

// The control node component under mocks, and the handover's fetch-and-open against 127.0.0.1.
let run: ProgramRun;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const ins = (r: { inputs: unknown }) => r.inputs as Record<string, any>;
before(async () => {
  run = await runUnderMocks("unit", { values: {}, secretKeys: [] }, async () => {
    const hs = new HeadscaleServer("hs", {
      stack: "unit",
      region: "ams3",
      vpcId: "vpc-1",
      node: { name: "hs", size: "s-1vcpu-1gb" },
      fqdn: "hs.example.net",
      zoneId: "z",
      image: "headscale/headscale:0.29.2",
      acmeEmail: "ops@example.net",
      acmeCa: "letsencrypt",
      derp: false,
      policy: { admins: ["a@example.net"], nodeTag: "tag:hm-node", adminPorts: [22, 9443], sshUsers: ["root"] },
    });
    return { headscaleApiKey: hs.apiKey, headscaleUrl: hs.apiUrl };
  });
});

describe("HeadscaleServer under mocks", () => {
  test("the program ran", () => assert.equal(run.error, undefined, String(run.error)));

  test("the firewall opens 80 and 443 to the internet and nothing else", () => {
    const fw = run.resources.find((r) => r.type === "digitalocean:index/firewall:Firewall")!;
    const inbound = (ins(fw).inboundRules as { protocol: string; portRange?: string; sourceAddresses?: string[] }[]).filter((r) => r.portRange);
    assert.deepEqual(inbound.map((r) => `${r.portRange}/${r.protocol}`).sort(), ["443/tcp", "80/tcp"]);
    assert.deepEqual(ins(fw).tags, ["hm-unit-headscale"]);
    const droplet = run.resources.find((r) => r.type === "digitalocean:index/droplet:Droplet")!;
    assert.deepEqual(ins(droplet).tags, ["hm-unit-headscale"], "not the cluster tag: no cluster rule applies");
  });

  test("the state volume is protected and retained; the A record points at the node", () => {
    const vol = run.resources.find((r) => r.type === "digitalocean:index/volume:Volume")!;
    assert.ok(vol.options.protect && vol.options.retainOnDelete);
    const a = run.resources.find((r) => r.type === "cloudflare:index/dnsRecord:DnsRecord")!;
    assert.equal(ins(a).name, "hs.example.net");
    assert.equal(ins(a).proxied, false);
  });

  test("replacing the control droplet (the README's recovery): the old node and its volume attachment go first", () => {
    // DigitalOcean attaches a volume to one droplet at a time and droplet_id is ForceNew
    // (terraform-provider-digitalocean digitalocean/volume/resource_volume_attachment.go); Pulumi
    // replaces create-before-delete unless told otherwise (pkg/resource/deploy/step_generator.go).
    const attach = run.resources.find((r) => r.type === "digitalocean:index/volumeAttachment:VolumeAttachment")!;
    assert.equal(attach.options.deleteBeforeReplace, true, "the attachment is deleted before its replacement attaches");
    const droplet = run.resources.find((r) => r.type === "digitalocean:index/droplet:Droplet")!;
    assert.equal(droplet.options.deleteBeforeReplace, true, "one control node, one holder of the state, at a time");
    assert.ok(String(ins(attach).dropletId).length > 0);
  });

  test("the API key and the sealing private key are secrets; the user data holds no secret", () => {
    assert.ok(JSON.stringify(run.outputs.headscaleApiKey).startsWith('{"secret":'), JSON.stringify(run.outputs.headscaleApiKey));
    const text = JSON.stringify(run.resources.map((r) => r.inputs));
    for (const m of text.matchAll(/hskey-api-[A-Za-z0-9_-]{12}-[A-Za-z0-9_-]{64}|BEGIN PRIVATE KEY/g)) {
      const at = text.lastIndexOf('{"secret":', m.index);
      assert.ok(at >= 0 && m.index - at < 200, `clear secret near ${text.slice(m.index - 80, m.index + 20)}`);
    }
    const droplet = run.resources.find((r) => r.type === "digitalocean:index/droplet:Droplet")!;
    assert.match(String(ins(droplet).userData), /hm-headscale-bootstrap/);
  });
});

describe("fetchSealedApiKey", () => {
  const keys = generateSealingKeyPair();
  // base64url, as upstream makes them (hscontrol/db/api_key.go CreateAPIKey): `-` and `_` occur.
  const KEY = `hskey-api-A_CDEFGHI-KL-${"c3".repeat(31)}-_`;
  let server: Server;
  let url = "";
  let hits = 0;
  before(async () => {
    server = createServer((req, res) => {
      hits++;
      if (hits < 3) return void res.writeHead(404).end();
      const blob = publicEncrypt({ key: keys.publicKeyPem, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, Buffer.from(KEY));
      res.writeHead(200).end(blob);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}/sealed-api-key.bin`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  test("waits until the blob is there, then opens it", async () => {
    assert.equal(await fetchSealedApiKey(url, keys.privateKeyPem, 5000, 50), KEY);
  });

  test("a blob sealed to another key fails at once, not after the timeout", async () => {
    const other = generateSealingKeyPair().privateKeyPem;
    const started = Date.now();
    await assert.rejects(fetchSealedApiKey(url, other, 60_000, 50), /does not open with this stack's sealing key/);
    assert.ok(Date.now() - started < 5000);
  });

  test("no blob within the timeout: a message that says what happened", async () => {
    await assert.rejects(fetchSealedApiKey("http://127.0.0.1:1/x", keys.privateKeyPem, 200, 50), /did not hand over its API key .* within 0 s/);
  });
});

describe("the deployer's join on the first pulumi up", () => {
  const join = deployerJoinCommand("https://hs.example.net", "cloud-headscale-admin-key");

  test("the join command reads the admin key from the state by its resource name", () => {
    assert.equal(
      join,
      `tailscale up --login-server=https://hs.example.net --auth-key="$(pulumi stack export --show-secrets | jq -r '.deployment.resources[] | select(.urn | endswith("::cloud-headscale-admin-key")) | .outputs.key')"`,
    );
  });

  test("off the tailnet, the check stops with that command (real sh, a stand-in ssh); on it, it passes", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "hm-hs-join-"));
    try {
      const ssh = path.join(dir, "ssh");
      for (const [code, expected] of [[255, 1], [0, 0]] as const) {
        writeFileSync(ssh, `#!/bin/sh\nexit ${code}\n`);
        chmodSync(ssh, 0o755);
        const r = spawnSync("sh", ["-c", deployerOnTailnetCheck(["-o", "BatchMode=yes"], "100.64.0.5", join)], { env: { PATH: `${dir}:${process.env.PATH}` }, encoding: "utf8" });
        assert.equal(r.status, expected, r.stderr);
        if (expected === 1) {
          assert.match(r.stderr, /not on the Headscale tailnet yet \(no SSH to 100\.64\.0\.5\)/);
          assert.ok(r.stderr.includes(join), r.stderr);
        } else assert.equal(r.stderr, "");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
