import * as digitalocean from "@pulumi/digitalocean";
import * as docker from "@pulumi/docker";
import type { Unwrap } from "@pulumi/pulumi";
import {
  validateResourceOfType,
  type ReportViolation,
  type ResourceValidationArgs,
  type ResourceValidationPolicy,
} from "@pulumi/policy";

/**
 * The hardening rules of hardened-matrix, written once. `pulumi preview --policy-pack policy` runs
 * them on every resource; the tests run them over the offline plan of every stack.
 *
 * What a policy sees at preview ( @pulumi/policy 1.21.0 server.js, @pulumi/pulumi 3.270.0
 * proto/analyzer_pb.js AnalyzerResourceOptions):
 * - `args.props` are the resource's inputs with secrets UNWRAPPED to their plain values
 *   (deserializeProperties(..., false)): a policy cannot tell a secret input from a plain one;
 *   values still unknown at preview throw inside the proxy and turn the check advisory.
 * - `args.opts` has protect, ignoreChanges, deleteBeforeReplace, aliases, customTimeouts,
 *   additionalSecretOutputs, parent. There is no retainOnDelete in the analyzer protocol.
 * So "user data is secret" is checked through additionalSecretOutputs, and "retained on delete"
 * cannot be checked by a policy: the tests check it on the plan.
 */

// For the offline runner (plan/policyRunner.ts), which has no @pulumi/policy of its own.
export type { PolicyResourceOptions, ReportViolation, ResourceValidation, ResourceValidationArgs, ResourceValidationPolicy } from "@pulumi/policy";

/** Labels a service carries to name a hardening exception (components/hardening.ts writes them). */
export const EXCEPTION_LABEL_PREFIX = "hardened-matrix.exception.";
/** The one service allowed to mount the Docker socket, read-only. */
export const SOCKET_PROXY_SERVICE = "socket-proxy";
/** Environment variable names that look like a secret; secrets are files (`*_FILE`), never env. */
export const SECRET_NAME = /(PASSWORD|PASSWD|SECRET|TOKEN|_KEY)$/i;
/**
 * Secret material recognisable by its shape, whatever the key says: a PEM private key, a Tailscale
 * (tskey-auth-...) or Headscale 0.28+ (hskey-auth-...) key, a bcrypt hash ($2a$/$2b$/$2y$, cost, 53 chars).
 */
export const SECRET_VALUE = /-----BEGIN [A-Z ]*PRIVATE KEY-----|\btskey-[a-z]+-|\bhskey-[a-z]+-|\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}/;
/**
 * Never opened by a cloud firewall, from any source: SSH (admins come over the VPN), the Docker API,
 * Swarm control and data (only inside wg0), Postgres, Dendrite's own port, Traefik's internal and
 * dashboard ports, Headscale's metrics and gRPC.
 */
export const FORBIDDEN_PORTS: readonly number[] = Object.freeze([22, 2375, 2376, 2377, 4789, 5432, 7946, 8008, 8080, 9000, 9090, 9443, 50443]);

/**
 * Never published by a Swarm service (the routing mesh would expose it on every node): SSH, the
 * Docker API, Swarm, Postgres. Traefik's entry points may use other high ports (the local stack
 * publishes 8080/8443; the firewall decides what reaches them on a droplet).
 */
export const FORBIDDEN_PUBLISHED_PORTS: readonly number[] = Object.freeze([22, 2375, 2376, 2377, 4789, 5432, 7946]);

type Check<T> = (props: T, where: string, args: ResourceValidationArgs, report: ReportViolation) => void;

function serviceName(svc: ServiceProps, args: ResourceValidationArgs): string {
  return `docker.Service "${args.name}" (service ${svc.name ?? "?"})`;
}

type ServiceProps = Unwrap<docker.ServiceArgs>;

function service(check: Check<ServiceProps>) {
  return validateResourceOfType(docker.Service, (svc, args, report) => check(svc, serviceName(svc, args), args, report));
}

function labels(svc: ServiceProps): Map<string, string> {
  return new Map((svc.labels ?? []).map((l) => [l.label, l.value]));
}

/** The exception `kind` is named with a non-empty reason in the service's labels. */
function excepted(svc: ServiceProps, kind: string): boolean {
  return (labels(svc).get(`${EXCEPTION_LABEL_PREFIX}${kind}`) ?? "").trim() !== "";
}

function policy(name: string, description: string, validateResource: ResourceValidationPolicy["validateResource"]): ResourceValidationPolicy {
  return { name, description, enforcementLevel: "mandatory", severity: "high", validateResource };
}

/** Inclusive bounds of a DigitalOcean port range: "80", "8000-9000"; "all", "0" or none mean every port. */
export function portBounds(portRange: string | undefined): [number, number] {
  if (portRange === undefined || portRange === "" || portRange === "all" || portRange === "0") return [1, 65535];
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(portRange);
  // An unreadable range is treated as every port: a policy never lets through what it cannot read.
  if (!m) return [1, 65535];
  const lo = Number(m[1]);
  return [lo, m[2] === undefined ? lo : Number(m[2])];
}

export const policies: ResourceValidationPolicy[] = [
  policy(
    "service-capabilities-dropped",
    "A service drops ALL capabilities and adds back only those named with a reason in a hardened-matrix.exception.cap-add.<CAP> label.",
    service((svc, where, _args, report) => {
      const c = svc.taskSpec.containerSpec;
      const drops = c.capDrops ?? [];
      if (drops.length !== 1 || drops[0] !== "ALL") report(`${where}: capDrops must be exactly ["ALL"], got ${JSON.stringify(drops)}`);
      for (const cap of c.capAdds ?? []) {
        if (!excepted(svc, `cap-add.${cap}`)) report(`${where}: adds capability ${cap} without a ${EXCEPTION_LABEL_PREFIX}cap-add.${cap} label naming the reason`);
      }
    }),
  ),
  policy(
    "service-non-root",
    "A service runs as a numeric non-root uid:gid, or names why it needs root in a hardened-matrix.exception.root label.",
    service((svc, where, _args, report) => {
      const user = svc.taskSpec.containerSpec.user ?? "";
      const m = /^(\d+):(\d+)$/.exec(user);
      if (!m) report(`${where}: user must be a numeric uid:gid, got "${user}"`);
      else if ((m[1] === "0" || m[2] === "0") && !excepted(svc, "root")) report(`${where}: runs as root (${user}) without a ${EXCEPTION_LABEL_PREFIX}root label naming the reason`);
    }),
  ),
  policy(
    "service-read-only-root",
    "A service's root filesystem is read-only, or a hardened-matrix.exception.writable-root label names why not.",
    service((svc, where, _args, report) => {
      if (svc.taskSpec.containerSpec.readOnly !== true && !excepted(svc, "writable-root")) {
        report(`${where}: root filesystem is writable without a ${EXCEPTION_LABEL_PREFIX}writable-root label naming the reason`);
      }
    }),
  ),
  policy(
    "service-memory-limits",
    "A service has a memory limit and a memory reservation, the reservation no larger than the limit.",
    service((svc, where, _args, report) => {
      const limit = svc.taskSpec.resources?.limits?.memoryBytes ?? 0;
      const reservation = svc.taskSpec.resources?.reservation?.memoryBytes ?? 0;
      if (!(limit > 0)) report(`${where}: no memory limit (taskSpec.resources.limits.memoryBytes)`);
      if (!(reservation > 0)) report(`${where}: no memory reservation (taskSpec.resources.reservation.memoryBytes)`);
      if (limit > 0 && reservation > limit) report(`${where}: memory reservation ${reservation} is above the limit ${limit}`);
    }),
  ),
  policy(
    "service-healthcheck",
    "A service has a healthcheck command.",
    service((svc, where, _args, report) => {
      const tests = svc.taskSpec.containerSpec.healthcheck?.tests ?? [];
      // ["NONE"] disables it; ["CMD", args...] or ["CMD-SHELL", cmd] runs one (moby/moby api/types/container/config.go HealthConfig).
      if (tests.length < 2 || !["CMD", "CMD-SHELL"].includes(tests[0] ?? "")) report(`${where}: no healthcheck command, got ${JSON.stringify(tests)}`);
    }),
  ),
  policy(
    "service-restart-and-rollback",
    "A service restarts on any exit, rolls back a failed update, and rotates its logs.",
    service((svc, where, _args, report) => {
      if (svc.taskSpec.restartPolicy?.condition !== "any") report(`${where}: restart policy condition must be "any"`);
      if (svc.updateConfig?.failureAction !== "rollback") report(`${where}: a failed update must roll back (updateConfig.failureAction)`);
      if (!svc.taskSpec.logDriver?.options?.["max-size"]) report(`${where}: logs are not rotated (taskSpec.logDriver.options.max-size)`);
    }),
  ),
  policy(
    "service-pinned-image",
    "A service's image is pinned to a version tag or a digest, never latest.",
    service((svc, where, _args, report) => {
      const image = svc.taskSpec.containerSpec.image;
      const lastPart = image.split("/").pop() ?? "";
      const pinned = /@sha256:[a-f0-9]{64}$/.test(image) || (/:[A-Za-z0-9._-]+$/.test(lastPart) && !/:latest$/.test(lastPart));
      if (!pinned) report(`${where}: image "${image}" is not pinned to a version or digest`);
    }),
  ),
  policy(
    "service-no-secret-env",
    "A service's environment holds no secret-looking variable; secrets are Swarm secret files (NAME_FILE), mounted 0400.",
    service((svc, where, _args, report) => {
      const c = svc.taskSpec.containerSpec;
      for (const [key, value] of Object.entries(c.env ?? {})) {
        if (SECRET_NAME.test(key)) report(`${where}: env ${key} looks like a secret; deliver it as a Swarm secret file`);
        else if (SECRET_VALUE.test(value)) report(`${where}: env ${key} holds secret material`);
      }
      for (const s of c.secrets ?? []) {
        if (s.fileMode !== 0o400) report(`${where}: secret ${s.fileName} is mounted with mode ${(s.fileMode ?? 0o444).toString(8)}, not 0400`);
      }
    }),
  ),
  policy(
    "service-no-secret-in-labels",
    "A service's labels hold no secret: labels are readable by anyone who can list services, and by the socket proxy's clients.",
    service((svc, where, _args, report) => {
      for (const { label, value } of svc.labels ?? []) {
        if (SECRET_NAME.test(label)) report(`${where}: label ${label} looks like a secret`);
        else if (SECRET_VALUE.test(value)) report(`${where}: label ${label} holds secret material`);
      }
    }),
  ),
  policy(
    "service-docker-socket",
    `Only the ${SOCKET_PROXY_SERVICE} service mounts the Docker socket, and only read-only.`,
    service((svc, where, _args, report) => {
      for (const m of svc.taskSpec.containerSpec.mounts ?? []) {
        // Only a bind mount's source is a host path; a volume's source (its name) may be unknown at preview.
        const paths = m.type === "bind" ? `${m.source ?? ""} ${m.target}` : m.target;
        if (!/docker\.sock/.test(paths)) continue;
        if (svc.name !== SOCKET_PROXY_SERVICE) report(`${where}: mounts the Docker socket; only ${SOCKET_PROXY_SERVICE} may`);
        if (m.readOnly !== true) report(`${where}: mounts the Docker socket writable; it must be read-only`);
      }
    }),
  ),
  policy(
    "service-host-network",
    "A service joins the host network only with a hardened-matrix.exception.host-network label naming the reason.",
    service((svc, where, _args, report) => {
      const onHost = (svc.taskSpec.networksAdvanceds ?? []).some((n) => n.name === "host");
      if (onHost && !excepted(svc, "host-network")) report(`${where}: joins the host network without a ${EXCEPTION_LABEL_PREFIX}host-network label naming the reason`);
    }),
  ),
  policy(
    "service-no-forbidden-published-port",
    "No service publishes SSH, the Docker API, Swarm or Postgres.",
    service((svc, where, _args, report) => {
      for (const p of svc.endpointSpec?.ports ?? []) {
        const published = p.publishedPort ?? p.targetPort;
        if (FORBIDDEN_PUBLISHED_PORTS.includes(published)) report(`${where}: publishes forbidden port ${published}`);
      }
    }),
  ),
  policy(
    "firewall-no-forbidden-port",
    "No DigitalOcean firewall lets in SSH, the Docker API, Swarm, Postgres or an internal port, from any source: those are reached only over the VPN or wg0.",
    validateResourceOfType(digitalocean.Firewall, (fw, args, report) => {
      for (const rule of fw.inboundRules ?? []) {
        // `action` ("allow" default, or "deny"): @pulumi/digitalocean 4.80.1 types/input.d.ts FirewallInboundRule.
        if (rule.protocol === "icmp" || rule.action === "deny") continue;
        const [lo, hi] = portBounds(rule.portRange);
        const hits = FORBIDDEN_PORTS.filter((p) => p >= lo && p <= hi);
        const from = [...(rule.sourceAddresses ?? []), ...(rule.sourceTags ?? []).map((t) => `tag:${t}`)].join(", ") || "any source";
        if (hits.length) report(`digitalocean.Firewall "${args.name}": inbound ${rule.protocol} ${rule.portRange ?? "all"} from ${from} opens forbidden port(s) ${hits.join(", ")}`);
      }
    }),
  ),
  policy(
    "volume-protected",
    "Stateful volumes (docker.Volume, digitalocean.Volume) are protected against deletion (retainOnDelete is not visible to policies; the tests check it).",
    (args, report) => {
      if (!args.isType(docker.Volume) && !args.isType(digitalocean.Volume)) args.notApplicable("only volumes hold state");
      if (!args.opts.protect) report(`${args.isType(docker.Volume) ? "docker.Volume" : "digitalocean.Volume"} "${args.name}": a stateful volume must be protected (protect: true)`);
    },
  ),
  policy(
    "droplet-user-data-secret",
    "A droplet's user data (it holds join keys) is kept secret in state and outputs: additionalSecretOutputs names userData.",
    validateResourceOfType(digitalocean.Droplet, (_droplet, args, report) => {
      if (!args.opts.additionalSecretOutputs.includes("userData")) {
        report(`digitalocean.Droplet "${args.name}": userData must be secret (additionalSecretOutputs: ["userData"])`);
      }
    }),
  ),
];
