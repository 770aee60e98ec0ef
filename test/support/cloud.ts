import assert from "node:assert/strict";
import { parse } from "yaml";
import type { Plan, PlannedResource } from "../../plan/plan";

import { ofType, type Inputs } from "./planned";

// Helpers shared by the cloud stack tests.
export { named, ofType, raw, type Inputs } from "./planned";

type HasResources = { resources: PlannedResource[] };

export const DROPLET = "digitalocean:index/droplet:Droplet";
export const VOLUME = "digitalocean:index/volume:Volume";
export const ATTACHMENT = "digitalocean:index/volumeAttachment:VolumeAttachment";
export const FIREWALL = "digitalocean:index/firewall:Firewall";
export const RECORD = "cloudflare:index/dnsRecord:DnsRecord";

/** Droplet name by its (mock) id, to resolve dropletIds. */
export function dropletNames(plan: HasResources): Map<number, string> {
  return new Map(ofType(plan, DROPLET).map((d) => [Number(d.id), String((d.inputs as Inputs).name)]));
}

/** Firewalls that apply to a droplet: DigitalOcean applies a firewall to every droplet carrying one of its tags. */
export function firewallsOf(plan: HasResources, droplet: string): PlannedResource[] {
  const d = ofType(plan, DROPLET).find((x) => (x.inputs as Inputs).name === droplet);
  assert.ok(d, `no droplet ${droplet}`);
  const tags = new Set((d.inputs as Inputs).tags as string[]);
  return ofType(plan, FIREWALL).filter((f) => (((f.inputs as Inputs).tags as string[]) ?? []).some((t) => tags.has(t)));
}

export function userData(plan: Plan, node: string): { text: string; doc: Inputs } {
  const f = plan.files.find((x) => x.path === `${node}/user-data.yaml`);
  assert.ok(f, `no user data for ${node}; files: ${plan.files.map((x) => x.path).join(", ")}`);
  return { text: f.content, doc: parse(f.content) as Inputs };
}

/** The runcmd steps as one script (cloud-init runs them that way). */
export function runcmd(doc: Inputs): string {
  return (doc.runcmd as unknown[]).map((l) => (Array.isArray(l) ? l.join(" ") : String(l))).join("\n");
}

export function writeFile(doc: Inputs, path: string): string {
  const f = (doc.write_files as Inputs[]).find((w) => w.path === path);
  assert.ok(f, `user data writes no ${path}`);
  return String(f.content);
}
