import assert from "node:assert/strict";
import { test } from "node:test";
import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import { joinedDevice, Tailnet, waitForDevice } from "../components/platform/tailnet";

// The Tailnet component alone under Pulumi mocks whose tailnet changes between polls, as a real one does
// while a replacement droplet boots. One process per file: the mocks are global.
const TAG = "tag:hm-test";
const CREATED = "2026-03-01T10:00:00Z";
type Device = { hostname: string; tags: string[]; created: string; addresses: string[]; name: string };
const device = (hostname: string, created: string, ip: string, tags = [TAG]): Device => ({ hostname, tags, created, addresses: [ip, "fd7a:115c:a1e0::1"], name: `${hostname}.tailnet.ts.net` });

let polls = 0;
const keys: Array<{ name: string; inputs: Record<string, unknown> }> = [];
let tailnet: (poll: number) => Device[] = () => [];

async function mocks(preview: boolean): Promise<void> {
  polls = 0;
  await pulumi.runtime.setMocks(
    {
      newResource: (a) => (a.type === "tailscale:index/tailnetKey:TailnetKey" && keys.push({ name: a.name, inputs: a.inputs }), { id: `${a.name}-id`, state: { ...a.inputs, ...(a.type === "tailscale:index/tailnetKey:TailnetKey" ? { key: "tskey-auth-x" } : {}) } }),
      call: (a) => {
        assert.equal(a.token, "tailscale:index/getDevices:getDevices");
        polls++;
        return { id: "devices", devices: tailnet(polls) };
      },
    },
    "hardened-matrix",
    "test",
    preview,
  );
}

function component(): Tailnet {
  return new Tailnet("t", { policy: "{}", nodeTag: TAG, description: "test" });
}

const value = <T>(o: pulumi.Output<T>): Promise<T> => new Promise((resolve) => o.apply((v) => resolve(v)));
const fast = { timeoutMs: 2_000, intervalMs: 20 };

test("joinedDevice: exactly the hostname, our tag, not older than the machine, the newest of several", () => {
  const devices = [
    device("node-1", "2025-01-01T00:00:00Z", "100.64.0.1"),
    device("node-1", "2026-03-01T10:02:00Z", "100.64.0.2"),
    device("node-1", "2026-03-01T10:05:00Z", "100.64.0.3"),
    device("node-1", "2026-03-01T10:09:00Z", "100.64.0.4", ["tag:someone-else"]),
    device("node-10", "2026-03-01T10:09:00Z", "100.64.0.5"),
  ];
  assert.equal(joinedDevice(devices, "node-1", TAG, CREATED)?.addresses[0], "100.64.0.3");
  // The same instant written with an offset is the same instant.
  assert.equal(joinedDevice([device("node-1", "2026-03-01T11:00:00+01:00", "100.64.0.6")], "node-1", TAG, CREATED)?.addresses[0], "100.64.0.6");
  assert.equal(joinedDevice(devices.slice(0, 1), "node-1", TAG, CREATED), undefined);
  assert.throws(() => joinedDevice(devices, "node-1", TAG, "yesterday"), /not an RFC 3339 time/);
});

test("a replaced node: the stale device (listed first) is skipped, and the new one is waited for until it joins", async () => {
  await mocks(false);
  tailnet = (poll) => [device("node-1", "2025-06-01T08:00:00Z", "100.64.9.9"), ...(poll >= 3 ? [device("node-1", "2026-03-01T10:01:30Z", "100.64.1.1")] : [])];
  const address = await value(component().address("node-1", { createdAt: CREATED }, fast));
  assert.equal(address, "100.64.1.1");
  assert.equal(polls, 3, "polled until the new device appeared");
});

test("a node that never joins fails after the bounded wait, naming the hostname and the rule", async () => {
  let looks = 0;
  const list = async () => (looks++, [device("node-1", "2025-06-01T08:00:00Z", "100.64.9.9")]);
  const started = Date.now();
  await assert.rejects(
    waitForDevice(list, "node-1", TAG, CREATED, { timeoutMs: 200, intervalMs: 20 }),
    /tailnet device node-1 \(tag tag:hm-test\) created at or after 2026-03-01T10:00:00Z has not joined within 0.2 s; older devices/,
  );
  assert.ok(Date.now() - started < 2_000);
  assert.ok(looks >= 3 && looks <= 20, `bounded polling: ${looks}`);
  // A wait of 0 (a preview of an existing machine) looks once.
  looks = 0;
  await assert.rejects(waitForDevice(list, "node-1", TAG, CREATED, { timeoutMs: 0, intervalMs: 20 }), /has not joined; older/);
  assert.equal(looks, 1);
});

test("a preview of a droplet being created looks nothing up", async () => {
  await mocks(true);
  tailnet = () => [device("node-1", "2025-06-01T08:00:00Z", "100.64.9.9")];
  const droplet = new digitalocean.Droplet("node-1", { image: "debian-12-x64", size: "s-1vcpu-1gb", region: "fra1" });
  const t = component();
  const known = await new Promise<boolean>((resolve) => {
    const out = t.address("node-1", droplet, fast);
    // An output unknown in a preview never runs its apply; isKnown says so.
    (out as unknown as { isKnown: Promise<boolean> }).isKnown.then(resolve);
  });
  assert.equal(known, false);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(polls, 0);
});

test("join keys: one per node, single-use, one hour, and never recreated by a refresh (only with the node's generation)", async () => {
  await mocks(false);
  keys.length = 0;
  const t = component();
  const a = await value(t.authKeyFor("node-1"));
  await value(t.authKeyFor("node-2"));
  assert.equal(a, "tskey-auth-x");
  assert.deepEqual(keys.map((k) => k.name), ["t-node-1-key", "t-node-2-key"], "one key per node, named after it");
  for (const k of keys) {
    // tailscale/terraform-provider-tailscale tailscale/resource_tailnet_key.go: expiry in seconds; recreate_if_invalid "never".
    assert.equal(k.inputs.reusable, false);
    assert.equal(k.inputs.preauthorized, true);
    assert.equal(k.inputs.expiry, 3600);
    assert.equal(k.inputs.recreateIfInvalid, "never");
    assert.deepEqual(k.inputs.tags, [TAG]);
  }
});
