/**
 * The simulated providers' ForceNew table (test/engine/sim/schema.ts) against real things: the
 * pinned SDK packages in node_modules (every field named is an input of that type, so a typo or a
 * renamed field cannot silently never replace), the program's own resource types (every type any
 * stack's offline plan creates is in the table), the upstream Terraform docker provider's source
 * (which the module proxy serves; build-engine.sh downloads it), and the bridge's decision on a few
 * changes.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
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

/** The Terraform docker provider's source, as build-engine.sh downloads it from the Go module proxy. */
const DOCKER_TF = (() => {
  const cache = process.env.HARDENED_MATRIX_ENGINE_CACHE ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(homedir(), ".cache"), "hardened-matrix", "pulumi-3.276.0");
  const script = readFileSync(path.join(ROOT, "test/engine/build-engine.sh"), "utf8");
  const version = /^DOCKER_TF_VERSION=(\S+)$/m.exec(script)![1]!;
  const dir = path.join(cache, "gomod", "github.com", "kreuzwerker", `terraform-provider-docker@${version}`, "internal", "provider");
  return existsSync(dir) ? dir : undefined;
})();
if (!DOCKER_TF && process.env.CI) throw new Error("the docker provider's source is missing: .ci/run runs test/engine/build-engine.sh, which downloads it");

/**
 * The top-level attributes of a Terraform SDKv2 resource schema (three tabs deep in these files)
 * and whether each is ForceNew, as the bridge names them (snake_case to camelCase).
 */
function upstreamForceNew(file: string): Map<string, boolean> {
  const src = readFileSync(path.join(DOCKER_TF!, file), "utf8");
  const fields = new Map<string, boolean>();
  for (const m of src.matchAll(/^\t\t\t"([a-z_]+)": \{\n/gm)) {
    // The attribute's own lines: up to its closing brace at the same depth.
    const body = src.slice(m.index! + m[0].length, src.indexOf("\n\t\t\t},", m.index!));
    const own = body.split("\n").filter((l) => /^\t\t\t\t[A-Za-z]/.test(l)).join("\n");
    const name = m[1]!.replace(/_([a-z])/g, (_x, c: string) => c.toUpperCase());
    fields.set(name, (fields.get(name) ?? false) || /ForceNew:\s*true/.test(own));
  }
  return fields;
}

describe("the ForceNew table against the Terraform docker provider's source (kreuzwerker/terraform-provider-docker)", { skip: DOCKER_TF ? false : "its source is not downloaded: run test/engine/build-engine.sh" }, () => {
  const files: Record<string, string> = {
    "docker:index/network:Network": "resource_docker_network.go",
    "docker:index/secret:Secret": "resource_docker_secret.go",
    "docker:index/serviceConfig:ServiceConfig": "resource_docker_config.go",
    "docker:index/volume:Volume": "resource_docker_volume.go",
    "docker:index/service:Service": "resource_docker_service.go",
  };
  for (const [type, file] of Object.entries(files)) {
    it(`${type}: the table's ForceNew fields are exactly upstream's, for the inputs the SDK has`, () => {
      const upstream = upstreamForceNew(file);
      const inputs = argsOf(type);
      const upstreamForce = [...upstream].filter(([f, force]) => force && inputs.has(f)).map(([f]) => f).sort();
      const ours = SCHEMAS[type]!;
      // A resource with no Update (every attribute ForceNew) may list them all: compare with its inputs.
      assert.deepEqual([...ours.forceNew].filter((f) => upstream.has(f)).sort(), upstreamForce, `${file}: upstream ForceNew ${upstreamForce.join(", ")}`);
    });
  }
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
