import assert from "node:assert/strict";

// A tiny evaluator of the policy subset Tailscale documents (and Headscale 0.29 implements,
// hscontrol/policy/v2) for `acls` and `ssh`: default deny; a tagged device is identified by its
// tags only (not by the user who created it). test/tailscaleAcl.test.ts and test/headscale.test.ts use it.
export interface Device {
  user?: string;
  tags: string[];
}
export interface Policy {
  groups?: Record<string, string[]>;
  tagOwners?: Record<string, string[]>;
  acls?: { action: string; src: string[]; dst: string[] }[];
  ssh?: { action: string; src: string[]; dst: string[]; users: string[] }[];
  tests?: { src: string; accept?: string[]; deny?: string[] }[];
  nodeAttrs?: { target: string[]; attr: string[] }[];
}

export function matches(policy: Policy, selector: string, d: Device): boolean {
  const untagged = d.tags.length === 0;
  if (selector === "*") return true;
  if (selector === "autogroup:member") return untagged;
  if (selector.startsWith("tag:")) return d.tags.includes(selector);
  if (selector.startsWith("group:")) {
    const members = policy.groups?.[selector];
    assert.ok(members, `undefined group ${selector}`);
    return untagged && d.user !== undefined && members.includes(d.user);
  }
  if (selector.includes("@")) return untagged && d.user === selector;
  throw new Error(`the evaluator does not know selector ${selector}`);
}

function portMatches(spec: string, port: number): boolean {
  if (spec === "*") return true;
  return spec.split(",").some((part) => {
    const [lo, hi] = part.split("-").map(Number) as [number, number | undefined];
    return port >= lo && port <= (hi ?? lo);
  });
}

export function mayReach(policy: Policy, src: Device, dst: Device, port: number): boolean {
  return (policy.acls ?? []).some(
    (rule) =>
      rule.action === "accept" &&
      rule.src.some((s) => matches(policy, s, src)) &&
      rule.dst.some((entry) => {
        const cut = entry.lastIndexOf(":");
        return matches(policy, entry.slice(0, cut), dst) && portMatches(entry.slice(cut + 1), port);
      }),
  );
}

export function sshAction(policy: Policy, src: Device, dst: Device, user: string): string | undefined {
  return (policy.ssh ?? []).find((r) => r.src.some((s) => matches(policy, s, src)) && r.dst.some((t) => matches(policy, t, dst)) && r.users.includes(user))?.action;
}
