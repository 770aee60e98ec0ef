import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";

/**
 * The one place service hardening lives (design decision 4). Every docker.Service of this program
 * is built by `hardenedService`; a service that needs less than the baseline must name the
 * exception and its reason here, and the exceptions are written into the service's labels so a
 * plan shows them and the tests can check that nothing else deviates.
 */

type Input<T> = pulumi.Input<T>;
type Spec = docker.types.input.ServiceTaskSpecContainerSpec;

export const EXCEPTION_LABEL_PREFIX = "hardened-matrix.exception.";
export const LOG_OPTIONS = { "max-size": "10m", "max-file": "3" } as const;
/** World-writable and sticky: the one mode a non-root service can use on a root-owned tmpfs (see TmpfsMount.mode). */
export const DEFAULT_TMPFS_MODE = 0o1777;

export interface CapabilityException {
  capability: string;
  reason: string;
}

export interface TmpfsMount {
  target: string;
  sizeMb: number;
  /**
   * Octal mode, default 0o1777. Swarm mounts a tmpfs owned by root and its options have no uid
   * (moby api/types/mount TmpfsOptions: SizeBytes, Mode), so a non-root service can write only
   * into a world-writable one; the sticky bit keeps one user from removing another's files.
   * Measured on Debian's dockerd 20.10: `--read-only --user 65534:65534` with tmpfs-mode=700 gets
   * "Permission denied", with 1777 it writes.
   */
  mode?: number;
}

export interface Healthcheck {
  test: string[];
  intervalSeconds?: number;
  timeoutSeconds?: number;
  retries?: number;
  startPeriodSeconds?: number;
}

export interface HardenedServiceArgs {
  /** Swarm service name (stable: other services reach it by this name on shared networks). */
  serviceName: string;
  image: Input<string>;
  /** Numeric "uid:gid"; never 0 unless `rootReason` says why. */
  user: string;
  rootReason?: string;
  commands?: Input<string>[];
  args?: Input<Input<string>>[] | Input<Input<string>[]>;
  /** Plain, non-secret settings only; secrets are files (`secrets`). */
  env?: Record<string, Input<string>>;
  capAdd?: CapabilityException[];
  /** Set only with a reason: the root filesystem is read-only otherwise. */
  writableRootReason?: string;
  tmpfs?: TmpfsMount[];
  mounts?: Input<docker.types.input.ServiceTaskSpecContainerSpecMount>[];
  secrets?: Input<docker.types.input.ServiceTaskSpecContainerSpecSecret>[];
  configs?: Input<docker.types.input.ServiceTaskSpecContainerSpecConfig>[];
  memoryLimitMb: number;
  memoryReservationMb: number;
  cpus?: number;
  healthcheck: Healthcheck;
  /**
   * Ids (`docker.Network.id`) of the networks to attach, never names: Swarm stores the id
   * (moby/moby daemon/cluster/services.go populateNetworkID) and the provider reads it back as
   * `id` (kreuzwerker/terraform-provider-docker internal/provider/resource_docker_service_structures.go
   * flattenTaskNetworksAdvanced), so a name differs from state on every plan, and the field is
   * ForceNew (resource_docker_service.go networks_advanced): the service would be replaced each time.
   */
  networkIds: Input<string>[];
  /**
   * Values of resources that, when replaced delete-first (a droplet), must take this service down
   * with them first because its configs or secrets are built from them (coTURN: its node's address).
   */
  replacedWith?: Input<string>[];
  /** Network aliases on every network (e.g. "postgres"). */
  aliases?: string[];
  constraints?: string[];
  ports?: docker.types.input.ServiceEndpointSpecPort[];
  replicas?: number;
  /** Stateful single-instance services must stop before the new task starts. */
  updateOrder?: "stop-first" | "start-first";
  stopGracePeriodSeconds?: number;
  labels?: Record<string, Input<string>>;
  sysctls?: Record<string, string>;
  /**
   * Set only with a reason: the service joins the host's network namespace (and no other network).
   * "host" is attached by name: Swarm stores a swarm-scoped id for it that no lookup by name returns
   * (measured on Debian's dockerd 20.10: `docker network inspect host` gives the local network's id,
   * the service spec another). So the attachment is left out of diffs (`ignoreChanges`): it is
   * always "host", and comparing it would replace the service on every `pulumi up`.
   */
  hostNetworkReason?: string;
}

function seconds(n: number): string {
  return `${n}s`;
}

const DEFAULT_STOP_GRACE_SECONDS = 30;

/** The update settings every service gets (one place, so the converge timeout below can be derived from them). */
export const UPDATE = { parallelism: 1, delaySeconds: 10, monitorSeconds: 30 } as const;
export const ROLLBACK = { parallelism: 1, delaySeconds: 5, monitorSeconds: 30 } as const;
/** What a task may spend being pulled and created before its container starts (a registry far away, a big image). */
export const PULL_ALLOWANCE_SECONDS = 180;
/** How often the provider looks at the update (its `delay`), and its own fixed 7 s first wait on an update. */
export const CONVERGE_POLL_SECONDS = 7;

/**
 * How long `pulumi up` waits for a service to converge. Swarm reports a task running only once its
 * healthcheck passed (moby daemon/cluster/executor/container/controller.go: Start waits for "healthy"),
 * which may take the start period and then `retries` failing checks; the old task first stops (its
 * grace period), the update monitors the new task, then waits its delay. Enough for one update that
 * works; a rollback then takes as long again, and the provider reports it as a failure whenever it ends.
 */
export function convergeTimeoutSeconds(a: Pick<HardenedServiceArgs, "healthcheck" | "stopGracePeriodSeconds">): number {
  const h = healthDefaults(a.healthcheck);
  const becomesHealthy = h.startPeriodSeconds + h.retries * (h.intervalSeconds + h.timeoutSeconds);
  return PULL_ALLOWANCE_SECONDS + (a.stopGracePeriodSeconds ?? DEFAULT_STOP_GRACE_SECONDS) + becomesHealthy + UPDATE.monitorSeconds + UPDATE.delaySeconds + 2 * CONVERGE_POLL_SECONDS;
}

function healthDefaults(h: Healthcheck): Required<Healthcheck> {
  return { test: h.test, intervalSeconds: h.intervalSeconds ?? 30, timeoutSeconds: h.timeoutSeconds ?? 5, retries: h.retries ?? 3, startPeriodSeconds: h.startPeriodSeconds ?? 30 };
}

/**
 * Swarm's max-replicas filter counts every task of the service on a node whose desired state is
 * running (swarmkit manager/scheduler/filter.go MaxReplicasFilter; moby/moby#40797), old task
 * included: with `start-first` the new task can only start on a node with room for both. So a limit
 * is set only for stop-first services (the old task is shut down first, then the new one fits), and
 * a start-first service has none: on a single eligible node it would stay Pending forever while the
 * old task kept serving (test/updateOrder.real.test.ts shows both on a real engine).
 */
export function maxReplicasPerNode(order: "stop-first" | "start-first", replicas: number): number | undefined {
  return order === "stop-first" && replicas === 1 ? 1 : undefined;
}

function assertValid(a: HardenedServiceArgs): void {
  const where = `service ${a.serviceName}`;
  const [uid, gid] = a.user.split(":");
  if (!/^\d+$/.test(uid ?? "") || !/^\d+$/.test(gid ?? "")) throw new Error(`${where}: user must be numeric uid:gid, got "${a.user}"`);
  if ((uid === "0" || gid === "0") && !a.rootReason) throw new Error(`${where}: runs as root without a rootReason`);
  for (const cap of a.capAdd ?? []) {
    if (!/^[A-Z_]+$/.test(cap.capability) || cap.reason.trim() === "") throw new Error(`${where}: capability ${cap.capability} needs a reason`);
  }
  if (typeof a.image === "string" && /:latest$|^[^:@]+$/.test(a.image)) throw new Error(`${where}: image "${a.image}" is not pinned`);
  if (a.memoryReservationMb > a.memoryLimitMb) throw new Error(`${where}: memory reservation above the limit`);
  if (a.hostNetworkReason !== undefined && a.networkIds.length > 0) throw new Error(`${where}: a host-network service joins no other network`);
  if (a.env) {
    for (const key of Object.keys(a.env)) {
      if (/(PASSWORD|PASSWD|SECRET|TOKEN|_KEY)$/i.test(key)) throw new Error(`${where}: env ${key} looks like a secret; deliver it as a Swarm secret file`);
    }
  }
}

/** Labels recording each exception to the baseline, so a plan shows them. */
export function exceptionLabels(a: HardenedServiceArgs): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const cap of a.capAdd ?? []) labels[`${EXCEPTION_LABEL_PREFIX}cap-add.${cap.capability}`] = cap.reason;
  if (a.rootReason) labels[`${EXCEPTION_LABEL_PREFIX}root`] = a.rootReason;
  if (a.writableRootReason) labels[`${EXCEPTION_LABEL_PREFIX}writable-root`] = a.writableRootReason;
  if (a.hostNetworkReason) labels[`${EXCEPTION_LABEL_PREFIX}host-network`] = a.hostNetworkReason;
  return labels;
}

/** The docker.Service arguments for a hardened service. */
export function hardenedServiceArgs(a: HardenedServiceArgs): docker.ServiceArgs {
  assertValid(a);
  const tmpfs: docker.types.input.ServiceTaskSpecContainerSpecMount[] = (a.tmpfs ?? []).map((t) => ({
    type: "tmpfs",
    target: t.target,
    tmpfsOptions: { sizeBytes: t.sizeMb * 1024 * 1024, mode: t.mode ?? DEFAULT_TMPFS_MODE },
  }));
  const labels = { ...(a.labels ?? {}), ...exceptionLabels(a) };
  const health = healthDefaults(a.healthcheck);
  const containerSpec: Spec = {
    image: a.image,
    user: a.user,
    commands: a.commands,
    args: a.args as Spec["args"],
    env: a.env,
    capDrops: ["ALL"],
    capAdds: (a.capAdd ?? []).map((c) => c.capability),
    readOnly: a.writableRootReason === undefined,
    mounts: [...tmpfs, ...(a.mounts ?? [])],
    secrets: a.secrets,
    configs: a.configs,
    sysctl: a.sysctls,
    stopGracePeriod: seconds(a.stopGracePeriodSeconds ?? DEFAULT_STOP_GRACE_SECONDS),
    healthcheck: {
      tests: ["CMD", ...health.test],
      interval: seconds(health.intervalSeconds),
      timeout: seconds(health.timeoutSeconds),
      retries: health.retries,
      startPeriod: seconds(health.startPeriodSeconds),
    },
  };
  const order = a.updateOrder ?? "stop-first";
  const replicas = a.replicas ?? 1;
  return {
    name: a.serviceName,
    labels: Object.entries(labels).map(([label, value]) => ({ label, value })),
    mode: { replicated: { replicas } },
    taskSpec: {
      containerSpec,
      resources: {
        limits: { memoryBytes: a.memoryLimitMb * 1024 * 1024, nanoCpus: a.cpus ? Math.round(a.cpus * 1e9) : undefined },
        reservation: { memoryBytes: a.memoryReservationMb * 1024 * 1024 },
      },
      // Swarm has no exponential backoff: a delay plus a bounded window keeps a crash loop slow.
      restartPolicy: { condition: "any", delay: "10s", maxAttempts: 0, window: "2m" },
      logDriver: { name: "json-file", options: { ...LOG_OPTIONS } },
      networksAdvanceds: a.hostNetworkReason !== undefined ? [{ name: "host" }] : a.networkIds.map((id) => ({ id, aliases: a.aliases })),
      placement: { constraints: a.constraints, maxReplicas: maxReplicasPerNode(order, replicas) },
    },
    updateConfig: { parallelism: UPDATE.parallelism, delay: seconds(UPDATE.delaySeconds), failureAction: "rollback", monitor: seconds(UPDATE.monitorSeconds), maxFailureRatio: "0", order },
    rollbackConfig: { parallelism: ROLLBACK.parallelism, delay: seconds(ROLLBACK.delaySeconds), failureAction: "pause", monitor: seconds(ROLLBACK.monitorSeconds), maxFailureRatio: "0", order },
    // Without it the provider returns as soon as Swarm accepts the spec, and `pulumi up` succeeds while
    // Swarm rolls a bad update back. With it, an update waits for UpdateStatus "completed" and fails
    // on "rollback_started/completed" or "paused"; a create that does not converge deletes the service
    // (kreuzwerker/terraform-provider-docker internal/provider/resource_docker_service_funcs.go
    // resourceDockerServiceUpdateRefreshFunc, resourceDockerServiceCreate; `(s|m)` durations).
    convergeConfig: { delay: seconds(CONVERGE_POLL_SECONDS), timeout: seconds(convergeTimeoutSeconds(a)) },
    endpointSpec: a.ports ? { mode: "vip", ports: a.ports } : undefined,
  };
}

/** The host network's attachment, which never changes and never compares equal to the provider's state. */
export const HOST_NETWORK_IGNORED = "taskSpec.networksAdvanceds";

/** Creates the hardened docker.Service. */
export function hardenedService(name: string, a: HardenedServiceArgs, opts: pulumi.CustomResourceOptions): docker.Service {
  const ignoreChanges = a.hostNetworkReason !== undefined ? [...(opts.ignoreChanges ?? []), HOST_NETWORK_IGNORED] : opts.ignoreChanges;
  // A Swarm service name is unique and `name` and `networks_advanced` are ForceNew
  // (kreuzwerker/terraform-provider-docker internal/provider/resource_docker_service.go): a
  // replacement made create-before-delete would create a second service of the same name, which
  // Swarm refuses. Delete first; a replaced network deletes its services first for the same reason.
  const args = hardenedServiceArgs(a);
  // The name's value never changes, but it depends on the networks: when a network is replaced
  // (delete-first, see network.ts), the engine deletes first only the dependents whose provider diff,
  // with the inputs that depend on the network unknown, asks for a replacement (pulumi/pulumi
  // pkg/resource/deploy/step_generator.go calculateDependentReplacements). Whether the bridge asks that
  // for a wholly unknown taskSpec is not certain; an unknown `name` (ForceNew) always does. Without this
  // the engine deleted the network while services still used it, which Docker refuses (drill overlay-mtu).
  // The same for what `replacedWith` names: without it, replacing the TURN node deleted coTURN's config
  // secret while coTURN still used it (drill replace-hm-prod-3).
  const deps = [...a.networkIds, ...(a.replacedWith ?? [])];
  if (deps.length > 0) args.name = pulumi.all(deps).apply(() => a.serviceName);
  return new docker.Service(name, args, { ...opts, ignoreChanges, deleteBeforeReplace: true });
}
