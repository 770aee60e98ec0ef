/**
 * The simulated providers' ForceNew table (test/engine/sim/schema.ts) against real things: the
 * pinned SDK packages in node_modules (every field named is an input of that type, so a typo or a
 * renamed field cannot silently never replace), the program's own resource types (every type any
 * stack's offline plan creates is in the table), and the bridge's decision on a few changes.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { describe, it } from "node:test";
import { SCHEMAS } from "./engine/sim/schema";
import { decide } from "./engine/sim/provider";
import { UNKNOWN } from "./engine/sim/values";
import { planToDisk, ROOT, STACKS } from "./support/plan";

/** `digitalocean:index/droplet:Droplet` -> node_modules/@pulumi/digitalocean/droplet.d.ts, DropletArgs. */
function argsOf(type: string): Set<string> {
  const [pkg, mod, name] = type.split(":") as [string, string, string];
  const file = mod.startsWith("index/") ? `${mod.slice("index/".length)}.d.ts` : `${mod}/${name.charAt(0).toLowerCase()}${name.slice(1)}.d.ts`;
  const dts = readFileSync(path.join(ROOT, "node_modules/@pulumi", pkg, file), "utf8");
  const start = dts.indexOf(`export interface ${name}Args {`);
  assert.ok(start >= 0, `${pkg}/${file} declares no ${name}Args`);
  const body = dts.slice(start, dts.indexOf("\n}", start));
  return new Set([...body.matchAll(/^\s{4}(?:readonly )?([a-zA-Z0-9]+)\??:/gm)].map((m) => m[1]!));
}

describe("the ForceNew table", () => {
  for (const [type, schema] of Object.entries(SCHEMAS)) {
    it(`${type}: every ForceNew field is an input of the pinned SDK (${schema.evidence})`, () => {
      const inputs = argsOf(type);
      const unknown = schema.forceNew.filter((f) => !inputs.has(f));
      assert.deepEqual(unknown, [], `not inputs of ${type}: ${unknown.join(", ")} (inputs: ${[...inputs].join(", ")})`);
    });
  }

  it("names every resource type each stack creates", () => {
    const missing = new Set<string>();
    for (const stack of STACKS) {
      for (const r of planToDisk(stack).resources) {
        if (r.custom && !r.type.startsWith("pulumi:providers:") && !SCHEMAS[r.type]) missing.add(`${r.type} (${stack})`);
      }
    }
    assert.deepEqual([...missing], []);
  });
});

describe("the simulated providers' diff", () => {
  const droplet = "digitalocean:index/droplet:Droplet";
  const old = { name: "hm-prod-1", region: "fra1", size: "s-1vcpu-2gb", ipv4Address: "203.0.113.5", urn: "do:droplet:1" };

  it("replaces a droplet whose region changed, deleting first because its name is explicit", () => {
    const d = decide(droplet, old, { name: "hm-prod-1", region: "ams3", size: "s-1vcpu-2gb" });
    assert.deepEqual(d.replaces, ["region"]);
    assert.equal(d.deleteBeforeReplace, true);
  });

  it("resizes a droplet in place; computed outputs missing from the inputs are no change", () => {
    const d = decide(droplet, old, { name: "hm-prod-1", region: "fra1", size: "s-2vcpu-4gb" });
    assert.deepEqual(d.changedKeys, ["size"]);
    assert.deepEqual(d.replaces, []);
    assert.equal(decide(droplet, old, { name: "hm-prod-1", region: "fra1", size: "s-1vcpu-2gb" }).changes, false);
  });

  it("an unknown value in a ForceNew field plans a replacement (a replaced droplet's id in an attachment)", () => {
    const d = decide("digitalocean:index/volumeAttachment:VolumeAttachment", { dropletId: 1, volumeId: "v" }, { dropletId: UNKNOWN, volumeId: "v" });
    assert.deepEqual(d.replaces, ["dropletId"]);
    assert.equal(d.deleteBeforeReplace, false);
  });

  it("any change to a docker network replaces it (no Update upstream)", () => {
    const d = decide("docker:index/network:Network", { name: "n", driver: "overlay", options: { mtu: "1420" } }, { name: "n", driver: "overlay", options: { mtu: "1400" } });
    assert.deepEqual(d.replaces, ["options"]);
  });

  it("a command's triggers replace it; its script changes update it (pulumi-command runs create again)", () => {
    const cmd = "command:local:Command";
    assert.deepEqual(decide(cmd, { create: "a", triggers: ["x"], stdout: "" }, { create: "a", triggers: ["y"] }).replaces, ["triggers"]);
    const d = decide(cmd, { create: "a", triggers: ["x"], stdout: "" }, { create: "b", triggers: ["x"] });
    assert.deepEqual([d.changedKeys, d.replaces], [["create"], []]);
  });

  it("secrets compare by value", () => {
    const wrap = (v: string) => ({ "4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", value: v });
    assert.equal(decide("docker:index/secret:Secret", { name: "s", data: wrap("a") }, { name: "s", data: wrap("a") }).changes, false);
    assert.deepEqual(decide("docker:index/secret:Secret", { name: "s", data: wrap("a") }, { name: "s", data: wrap("b") }).replaces, ["data"]);
  });
});
