import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import type { preAuthKeyProvider } from "../components/platform/headscaleKeys";
import { isSecretLeaf } from "../plan/mockRuntime";
import { planStack, type Plan } from "../plan/plan";
import { checkPlan } from "../plan/policyRunner";
import { readStackConfig } from "../plan/stackConfig";
import { FakeHeadscaleApi } from "./support/fakeHeadscaleApi";
import { DROPLET, firewallsOf, ofType, runcmd, userData, type Inputs } from "./support/cloud";

// The real program, prod stack with vpn: headscale and a control node of its own, under mocks.
let plan: Plan;
const prodNodes = JSON.parse(readStackConfig("prod").values["hardened-matrix:nodes"]!) as { name: string }[];
const CONTROL = "hm-prod-hs";

async function planWith(derp: boolean): Promise<Plan> {
  return planStack("prod", {
    "hardened-matrix:vpn": "headscale",
    "hardened-matrix:headscaleDerp": derp,
    "hardened-matrix:nodes": [...prodNodes, { name: CONTROL, size: "s-1vcpu-1gb", roles: ["headscale"] }],
  });
}

before(async () => {
  plan = await planWith(false);
  assert.equal(plan.error, undefined, String(plan.error));
});

const publicPorts = (p: Plan, droplet: string) =>
  firewallsOf(p, droplet)
    .flatMap((f) => ((f.inputs as Inputs).inboundRules as Inputs[]) ?? [])
    .filter((r) => ((r.sourceAddresses as string[]) ?? []).some((a) => a === "0.0.0.0/0" || a === "::/0") && r.portRange !== undefined)
    .map((r) => `${r.portRange}/${r.protocol}`)
    .sort();

test("prod + headscale: the control node opens only 80 and 443 to the internet (3478/udp with DERP)", async () => {
  assert.deepEqual(publicPorts(plan, CONTROL), ["443/tcp", "80/tcp"]);
  const derp = await planWith(true);
  assert.equal(derp.error, undefined, String(derp.error));
  assert.deepEqual(publicPorts(derp, CONTROL), ["3478/udp", "443/tcp", "80/tcp"]);
});

test("prod + headscale: the control node is no cluster member; no Tailscale resource is planned", () => {
  const control = ofType(plan, DROPLET).find((d) => (d.inputs as Inputs).name === CONTROL)!;
  assert.deepEqual((control.inputs as Inputs).tags, ["hm-prod-headscale"]);
  assert.equal((control.inputs as Inputs).vpcUuid, undefined);
  assert.equal(plan.resources.filter((r) => r.type.startsWith("tailscale:")).length, 0);
  assert.equal(ofType(plan, DROPLET).length, prodNodes.length + 1);
});

test("prod + headscale: each cluster node joins Headscale with its own tagged key", () => {
  const keys = ofType(plan, "pulumi-nodejs:dynamic/headscale:PreAuthKey");
  assert.equal(keys.length, prodNodes.length + 1, "one per node, one for the deployer");
  for (const n of prodNodes) {
    const steps = runcmd(userData(plan, n.name).doc);
    assert.match(steps, /tailscale up .*--login-server=https:\/\/hs\.[a-z0-9.-]+ /);
    assert.doesNotMatch(steps, /--advertise-tags/);
  }
  const addresses = ofType(plan, "pulumi-nodejs:dynamic/headscale:NodeAddress");
  assert.equal(addresses.length, prodNodes.length);
});

test("prod + headscale: no secret in clear in resources.json; the API and admin keys are secret outputs", () => {
  const text = JSON.stringify(plan.resources);
  assert.doesNotMatch(text, /hskey-(api|auth)-[A-Za-z0-9]{12}-[A-Za-z0-9]{64}/);
  assert.doesNotMatch(text, /BEGIN PRIVATE KEY/);
  // Stack outputs keep secret leaves wrapped (outputs.json redacts them, test/invariants.test.ts).
  assert.ok(isSecretLeaf(plan.outputs.headscaleAdminAuthKey), JSON.stringify(plan.outputs.headscaleAdminAuthKey));
  assert.equal(plan.outputs.headscaleUrl, "https://hs.example.org");
});

test("prod + headscale: each node's first SSH step first checks the deployer is on the tailnet, naming the join command", () => {
  const waits = plan.resources.filter((r) => r.type === "command:local:Command" && r.name.endsWith("-bootstrapped"));
  assert.equal(waits.length, prodNodes.length);
  for (const w of waits) {
    const create = String((w.inputs as Inputs).create);
    assert.match(create, /not on the Headscale tailnet yet/);
    assert.match(create, /tailscale up --login-server=https:\/\/hs\.example\.org --auth-key=/);
    assert.match(create, /endswith\(\\?"::cloud-headscale-admin-key\\?"\)/);
  }
});

test("prod + headscale: the pre-auth key provider as Pulumi serializes it (what the dynamic provider host runs) works against the fake API", async () => {
  const r = plan.resources.find((x) => x.name === `cloud-headscale-${prodNodes[0]!.name}-key`)!;
  const code = String((plan.rawInputs.get(r.urn) as Record<string, unknown>).__provider);
  const dir = mkdtempSync(path.join(tmpdir(), "hm-hs-provider-"));
  const apiKey = `hskey-api-Test_key-123-${"k1".repeat(32)}`;
  const fake = new FakeHeadscaleApi(apiKey);
  await fake.start();
  try {
    writeFileSync(path.join(dir, "provider.js"), code);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const provider = (require(path.join(dir, "provider.js")) as { handler: () => Required<typeof preAuthKeyProvider> }).handler();
    const { id, outs } = await provider.create({ apiUrl: fake.url, apiKey, tags: ["tag:hm-prod"], ttlSeconds: 3600 });
    assert.match(String(outs.key), /^hskey-auth-/);
    await provider.delete(id, outs);
    assert.equal(fake.keys.size, 0);
  } finally {
    await fake.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("prod + headscale: the policy pack passes over the plan", async () => {
  assert.deepEqual(await checkPlan(plan), []);
});
