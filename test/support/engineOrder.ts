/**
 * The Pulumi engine's step order for one `pulumi up`, modelled from its source (pulumi/pulumi
 * pkg/resource/deploy/step_generator.go, snapshot near v3.260; the installed SDK is 3.270), over
 * two offline plans: the state (what the last `up` registered) and the goal (this run). Issue 16
 * replaces this with the real engine over simulated providers; until then this is what the tests
 * of replacing, adding and removing nodes judge against.
 *
 * What it follows:
 * - Resources are stepped in registration order. A resource is replaced if it is named by
 *   `--replace` (isTargetedReplace), if a resource in its `replaceWith` was replaced (diff), or if
 *   an input whose value changed (or came from a replaced resource, so is unknown) is one its
 *   provider replaces on (the ForceNew table below, with its evidence), minus `ignoreChanges`.
 * - Replace, default: create the replacement now, delete the old one after every other step.
 * - Replace with deleteBeforeReplace: first delete, in reverse dependency order, every dependent
 *   (DependencyGraph.DependingOn over the state, skipping what this run already registered) whose
 *   provider Diff, with the inputs that came from the replace set made unknown, is a replace
 *   (calculateDependentReplacements), plus what has it in `replaceWith`
 *   (findDependentCascadeReplacements); then delete the resource; then create it.
 * - Resources no longer in the program are deleted at the end, with the pending deletes of
 *   create-before-delete replacements, in reverse dependency order.
 */
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import type { RecordedResource } from "../../plan/mockRuntime";
import { planStack } from "../../plan/plan";

export type Step = { op: "create" | "update" | "delete" | "same"; urn: string; why?: string };

/** Inputs each provider replaces on (a whole unknown value counts as a change). */
const FORCE_NEW: Record<string, string[] | "all"> = {
  // pulumi/pulumi-command provider/pkg/provider/common/inputs.go: triggers is replaceOnChanges;
  // create, update, delete, stdin, environment are updates (Command has an Update).
  "command:local:Command": ["triggers"],
  // digitalocean/terraform-provider-digitalocean digitalocean/droplet/resource_droplet.go (ForceNew).
  "digitalocean:index/droplet:Droplet": ["image", "region", "sshKeys", "userData", "monitoring", "vpcUuid", "dropletAgent", "publicNetworking"],
  // digitalocean/volume/resource_volume_attachment.go: droplet_id, volume_id ForceNew.
  "digitalocean:index/volumeAttachment:VolumeAttachment": ["dropletId", "volumeId"],
  // digitalocean/reservedip/resource_reserved_ip_assignment.go: ip_address, droplet_id ForceNew.
  "digitalocean:index/reservedIpAssignment:ReservedIpAssignment": ["ipAddress", "dropletId"],
  // tailscale/terraform-provider-tailscale tailscale/resource_tailnet_key.go: RequiresReplace.
  "tailscale:index/tailnetKey:TailnetKey": ["reusable", "ephemeral", "tags", "preauthorized", "expiry", "description"],
  // cloudflare/terraform-provider-cloudflare internal/services/dns_record/schema.go: only zone_id RequiresReplace.
  "cloudflare:index/dnsRecord:DnsRecord": ["zoneId"],
  // kreuzwerker/terraform-provider-docker internal/provider/resource_docker_secret.go, resource_docker_config.go:
  // every argument ForceNew (Swarm secrets and configs are immutable).
  "docker:index/secret:Secret": "all",
  "docker:index/serviceConfig:ServiceConfig": "all",
  // resource_docker_service.go: auth and name at the top level (the nested ForceNew fields, e.g.
  // task_spec.container_spec.hosts and sysctl, are not modelled: constants in this program).
  "docker:index/service:Service": ["auth", "name"],
  // hashicorp/terraform-provider-random: every argument of random_id / random_bytes is RequiresReplace.
  "random:index/randomId:RandomId": "all",
  "random:index/randomBytes:RandomBytes": "all",
};

function forceNew(r: RecordedResource, key: string): boolean {
  const table = FORCE_NEW[r.type];
  if (table === undefined) throw new Error(`engine model: no ForceNew table for ${r.type} (input ${key} of ${r.urn}); add it with its upstream evidence`);
  return table === "all" || table.includes(key);
}

function dependencies(r: RecordedResource): string[] {
  return [...r.options.dependsOn, ...Object.values(r.options.propertyDependencies ?? {}).flat(), ...(r.options.replaceWith ?? [])];
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

export function engineSteps(state: RecordedResource[], goal: RecordedResource[], opts: { replace?: string[] } = {}): Step[] {
  const old = new Map(state.map((r) => [r.urn, r]));
  const oldIndex = new Map(state.map((r, i) => [r.urn, i]));
  const steps: Step[] = [];
  const replaced = new Set<string>();
  const deletedEarly = new Set<string>();
  const pendingDeletes: string[] = [];
  const registered = new Set<string>();

  const dependingOn = (root: string): RecordedResource[] => {
    const set = new Set([root]);
    const out: RecordedResource[] = [];
    for (const r of state.slice((oldIndex.get(root) ?? 0) + 1)) {
      if (registered.has(r.urn)) continue;
      if (dependencies(r).some((d) => set.has(d))) {
        set.add(r.urn);
        out.push(r);
      }
    }
    return out;
  };

  for (const r of goal) {
    registered.add(r.urn);
    const o = old.get(r.urn);
    if (!o) {
      steps.push({ op: "create", urn: r.urn });
      continue;
    }
    if (deletedEarly.has(r.urn)) {
      steps.push({ op: "create", urn: r.urn, why: "deleted before a delete-before-replace" });
      replaced.add(r.urn);
      continue;
    }
    const inputs = (r.inputs ?? {}) as Record<string, unknown>;
    const before = (o.inputs ?? {}) as Record<string, unknown>;
    const ignored = new Set(r.options.ignoreChanges);
    const changed = [...new Set([...Object.keys(inputs), ...Object.keys(before)])].filter(
      (k) => !ignored.has(k) && (!same(inputs[k], before[k]) || (r.options.propertyDependencies?.[k] ?? []).some((d) => replaced.has(d))),
    );
    let why: string | undefined;
    if (opts.replace?.includes(r.urn)) why = "--replace";
    else if ((r.options.replaceWith ?? []).some((u) => replaced.has(u))) why = "replaceWith";
    else if (r.custom && changed.some((k) => forceNew(r, k))) why = `ForceNew ${changed.filter((k) => forceNew(r, k)).join(",")}`;
    if (!why) {
      steps.push({ op: changed.length > 0 ? "update" : "same", urn: r.urn });
      continue;
    }
    replaced.add(r.urn);
    if (!r.options.deleteBeforeReplace) {
      steps.push({ op: "create", urn: r.urn, why: `replacement (${why})` });
      pendingDeletes.push(r.urn);
      continue;
    }
    const replaceSet = new Set([r.urn]);
    const dependents: RecordedResource[] = [];
    for (const d of dependingOn(r.urn)) {
      if (!d.custom) continue;
      const unknown = Object.entries(d.options.propertyDependencies ?? {})
        .filter(([, deps]) => deps.some((u) => replaceSet.has(u)))
        .map(([k]) => k)
        .filter((k) => !d.options.ignoreChanges.includes(k));
      if (unknown.some((k) => forceNew(d, k)) || (d.options.replaceWith ?? []).some((u) => replaceSet.has(u))) {
        replaceSet.add(d.urn);
        dependents.push(d);
      }
    }
    for (const d of dependents.reverse()) {
      if (deletedEarly.has(d.urn)) continue;
      steps.push({ op: "delete", urn: d.urn, why: `depends on ${r.urn}, replaced delete-before-replace` });
      deletedEarly.add(d.urn);
    }
    steps.push({ op: "delete", urn: r.urn, why: `delete-before-replace (${why})` });
    steps.push({ op: "create", urn: r.urn, why: `replacement (${why})` });
  }
  const goalUrns = new Set(goal.map((r) => r.urn));
  const removed = state.filter((r) => !goalUrns.has(r.urn) && r.custom).map((r) => r.urn);
  for (const urn of [...pendingDeletes, ...removed].sort((a, b) => oldIndex.get(b)! - oldIndex.get(a)!)) steps.push({ op: "delete", urn, why: pendingDeletes.includes(urn) ? "replaced (create-before-delete)" : "no longer in the program" });
  return steps;
}

/** The inputs that make its provider replace `goal` over `state` (changed, not ignored, ForceNew). */
export function replaceKeys(state: RecordedResource, goal: RecordedResource): string[] {
  const [a, b] = [(state.inputs ?? {}) as Record<string, unknown>, (goal.inputs ?? {}) as Record<string, unknown>];
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => !goal.options.ignoreChanges.includes(k) && !same(a[k], b[k]) && forceNew(goal, k));
}

/** Index of the first step with `op` on a resource whose URN ends with `::<name>`; -1 if none. */
export function stepIndex(steps: Step[], op: Step["op"], name: string): number {
  return steps.findIndex((s) => s.op === op && s.urn.endsWith(`::${name}`));
}

/** The registrations of one offline plan of `stack` (own process: the Pulumi runtime is global state). */
export function planRecords(stack: string, overrides: Record<string, unknown> = {}): RecordedResource[] {
  const r = spawnSync(process.execPath, ["--import", "tsx", __filename, stack, JSON.stringify(overrides)], {
    cwd: path.resolve(__dirname, "../.."),
    encoding: "utf8",
    timeout: 300_000,
    maxBuffer: 512 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`planRecords ${stack} exited ${r.status}:\n${r.stderr}`);
  return JSON.parse(r.stdout) as RecordedResource[];
}

if (require.main === module) {
  const [stack, overrides] = process.argv.slice(2);
  void planStack(stack!, JSON.parse(overrides ?? "{}")).then((plan) => {
    if (plan.error) {
      process.stderr.write(String(plan.error));
      process.exit(1);
    }
    process.stdout.write(JSON.stringify(plan.resources));
  });
}
