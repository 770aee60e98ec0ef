import * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { meshAddressCollisions } from "./render/wireguard";
import { FUNNEL_FQDN } from "./render/funnel";
import { checkStaticTurnCert } from "./render/turnCert";

/**
 * The stack config schema: the only description of what a site can set. `index.ts` is the only
 * caller of `loadSettings`; components receive plain values from it.
 *
 * Primitive keys are also declared (with their defaults) in Pulumi.yaml so the CLI types them and
 * refuses plaintext secrets; object-valued keys (Pulumi cannot declare those) get their defaults here.
 */

export const PROJECT = "hardened-matrix";

const dnsLabel = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
export function isDnsName(value: string): boolean {
  if (value.length > 253 || !value.includes(".")) return false;
  return value.split(".").every((label) => dnsLabel.test(label));
}

// Regions where DigitalOcean offers droplets and volumes (checked 2026-11; `doctl compute region list`).
export const DO_REGIONS = ["nyc1", "nyc2", "nyc3", "sfo2", "sfo3", "ams3", "sgp1", "lon1", "fra1", "tor1", "blr1", "syd1", "atl1"] as const;

// Droplet sizes this program knows the price and memory of (USD/month, checked 2026-11 against DO's
// pricing page). A real deployment reads live prices with digitalocean.getSizes().
export const DROPLET_SIZES = {
  "s-1vcpu-512mb-10gb": { memoryMb: 512, priceMonthly: 4 },
  "s-1vcpu-1gb": { memoryMb: 1024, priceMonthly: 6 },
  "s-1vcpu-2gb": { memoryMb: 2048, priceMonthly: 12 },
  "s-2vcpu-2gb": { memoryMb: 2048, priceMonthly: 18 },
  "s-2vcpu-4gb": { memoryMb: 4096, priceMonthly: 24 },
  "s-4vcpu-8gb": { memoryMb: 8192, priceMonthly: 48 },
  "s-8vcpu-16gb": { memoryMb: 16384, priceMonthly: 96 },
} as const;
export type DropletSize = keyof typeof DROPLET_SIZES;
const dropletSizeNames = Object.keys(DROPLET_SIZES) as [DropletSize, ...DropletSize[]];

// Regions with Spaces Standard Storage (docs.digitalocean.com/products/spaces/details/availability, generated 2026-03-23).
export const SPACES_REGIONS = ["nyc3", "ams3", "sfo2", "sfo3", "sgp1", "lon1", "fra1", "tor1", "blr1", "syd1", "atl1"] as const;

// "headscale": the Headscale control node (vpn: headscale); it carries no other role and joins no swarm.
export const NODE_ROLES = ["manager", "edge", "db", "turn", "headscale"] as const;
export type NodeRole = (typeof NODE_ROLES)[number];

// Pinned images, tags checked 2026-11 against the upstream Dockerfiles and release tags.
// Never a floating tag: see `pinnedImage`.
export const DEFAULT_IMAGES = {
  // tailscale/tailscale release tag v1.102.3 (53a0d65); build_docker.sh tags images v${VERSION_SHORT},
  // entrypoint /usr/local/bin/containerboot, binaries tailscale and tailscaled in /usr/local/bin.
  tailscale: "tailscale/tailscale:v1.102.3",
  // ls92 added `chroot /` to its HAProxy config, which a non-root proxy cannot do; ls91 has none.
  socketProxy: "lscr.io/linuxserver/socket-proxy:3.4.3-r0-ls91",
  traefik: "traefik:v3.7.13",
  postgres: "postgres:17.9-alpine",
  // restic/restic docker/Dockerfile.release at v0.19.1: Alpine, /usr/bin/restic, no USER.
  restic: "restic/restic:0.19.1",
  dendrite: "matrixdotorg/dendrite-monolith:v0.15.2",
  coturn: "coturn/coturn:4.17.0",
  // go-acme/lego v4.35.2 (the last v4: v5.0.0 renamed the CLI flags and merged run and renew, CHANGELOG.md): buildx.Dockerfile is alpine:3 with /lego, no USER.
  // test/turnCert.real.test.ts runs Debian's lego 4.9.1: every flag the loop uses exists in both (cmd/flags.go).
  lego: "goacme/lego:v4.35.2",
  headscale: "headscale/headscale:0.29.2",
  // docker-library/official-images library/node (24.19.0-alpine3.24, from nodejs/docker-node fd1bf45,
  // 24/alpine3.24/Dockerfile: user node is uid/gid 1000, node at /usr/local/bin/node).
  federationGate: "node:24.19.0-alpine3.24",
};
export type ImageName = keyof typeof DEFAULT_IMAGES;

/**
 * The gid cloud-init gives the `docker` group on droplets, before docker.io is installed (the
 * package creates the group only if missing, and docker.socket sets SocketGroup=docker), so the
 * socket proxy knows it in advance. Debian Policy 9.2.2 (policy/ch-opersys.rst) classes: 0-99 and
 * 60000-64999 are allocated by Debian (registry: base-passwd's README); 100-999 (system) and
 * 1000-59999 (users) are handed out dynamically by adduser (/etc/adduser.conf FIRST_/LAST_*) and
 * groupadd (/etc/login.defs SYS_GID_MIN..SYS_GID_MAX 100-999, GID_MIN..GID_MAX 1000-60000), and
 * 65536+ likewise (subordinate ids from SUB_GID_MIN 100000). Only 65000-65533 ("Reserved") is
 * neither allocated nor handed out, so a fixed gid there collides with nothing on a fresh image;
 * 999, the old default, is systemd-journal on Debian 12.
 */
export const DOCKER_SOCKET_GID = 65200;
export const DOCKER_SOCKET_GID_RANGE = [65000, 65533] as const;

/** Facts about the machine running the program (not config), passed in by index.ts. */
export interface HostFacts {
  /** Group of /var/run/docker.sock here, when it exists: the local target's default dockerSocketGid. */
  localDockerSocketGid?: number;
  /** Whether DigitalOcean's Spaces keys reach the provider (its config or SPACES_* environment); unknown: not checked. */
  spacesKeys?: boolean;
  /** SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY are both set for the provider. */
  spacesKeysInEnv?: boolean;
  /** The time certificates are checked against (tests pin it); now when absent. */
  now?: Date;
}

const pinnedImage = z
  .string()
  .refine((ref) => /^[a-z0-9][a-z0-9._\/:-]*(@sha256:[a-f0-9]{64})?$/.test(ref) && (/@sha256:/.test(ref) || /:[A-Za-z0-9._-]+$/.test(ref.split("/").pop() ?? "")), {
    message: "must be an image reference pinned to a tag or digest (e.g. traefik:v3.7.13)",
  })
  .refine((ref) => !/:latest$/.test(ref), { message: "must not use the floating tag 'latest'" });

const dnsName = z.string().refine(isDnsName, { message: "is not a DNS name (lower-case labels separated by dots)" });
const hostLabel = z
  .string()
  .refine((v) => v === "@" || dnsLabel.test(v), { message: 'must be a DNS label or "@" for the domain itself' });
const port = z.number().int().min(1).max(65535);
const ipv4 = z.string().refine((v) => /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/.test(v), {
  message: "is not an IPv4 address",
});
const cidr4 = z.string().refine((v) => {
  const [ip, len, ...rest] = v.split("/");
  return rest.length === 0 && ipv4.safeParse(ip).success && /^\d+$/.test(len ?? "") && Number(len) <= 32;
}, { message: "is not an IPv4 CIDR range (a.b.c.d/n)" });

/** A restic repository: an S3 URL (restic docs, "Amazon S3": s3:https://host[:port]/bucket[/prefix]) or an absolute path. */
const S3_REPOSITORY = /^s3:https:\/\/[a-z0-9.-]+(:\d{1,5})?\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/[A-Za-z0-9._-]+)*$/;
const LOCAL_REPOSITORY = /^\/(?:[A-Za-z0-9_.-]+\/)*[A-Za-z0-9_.-]+$/;

/** A string that may be empty (unset); when set it must pass `check`. */
function optionalString(check: (v: string) => boolean, message: string) {
  return z.string().refine((v) => v === "" || check(v), { message });
}

const nodeSchema = z.strictObject({
  name: z.string().refine((v) => dnsLabel.test(v), { message: "is not a DNS label (a-z, 0-9, -)" }),
  size: z.enum(dropletSizeNames, { message: `is not a known droplet size; allowed: ${dropletSizeNames.join(", ")}` }),
  // No role: a plain swarm worker (capacity, no role label).
  roles: z.array(z.enum(NODE_ROLES)),
  /** Bump to rotate this node's WireGuard key pair (the key's `keepers`). */
  meshKeyVersion: z.number().int().min(1).optional(),
});
export type NodeSettings = z.infer<typeof nodeSchema>;

/** Keys as they arrive from config, after Pulumi.yaml defaults are applied. */
export const settingsSchema = z.strictObject({
  target: z.enum(["local", "digitalocean"]),
  domain: dnsName,
  serverName: optionalString(isDnsName, "is not a DNS name (lower-case labels separated by dots)"),
  matrixHost: hostLabel,
  turnHost: hostLabel,
  delegation: z.enum(["well-known", "srv", "none"]),
  federationMode: z.enum(["open", "closed", "allowlist"]),
  federationAllowlist: z.array(dnsName),
  presence: z.boolean(),
  maxUploadMb: z.number().int().min(1).max(2048),
  rateLimitThreshold: z.number().int().min(1).max(1000),
  rateLimitCooloffMs: z.number().int().min(10).max(600000),
  httpPort: port,
  httpsPort: port,
  federationPort: port,
  adminPort: port,
  dashboard: z.boolean(),
  // Not declared in Pulumi.yaml: its default depends on the target (see DOCKER_SOCKET_GID).
  dockerSocketGid: z.number().int().min(1).max(65535).optional(),
  acmeEmail: optionalString((v) => z.email().safeParse(v).success, "is not an email address"),
  acmeCa: z.enum(["letsencrypt", "letsencrypt-staging", "none"]),
  acmeDnsToken: z.string(),
  turnTlsCertPem: z.string(),
  turnTlsKeyPem: z.string(),
  /** TURN over TLS: off, static (turnTlsCertPem/turnTlsKeyPem, renewed by hand) or acme (renewed by the turn-cert service). */
  turnTls: z.enum(["off", "static", "acme"]),
  turnEnabled: z.boolean(),
  turnPort: port,
  turnTlsPort: port,
  turnMinPort: z.number().int().min(1024).max(65535),
  turnMaxPort: z.number().int().min(1024).max(65535),
  turnExternalIp: optionalString((v) => ipv4.safeParse(v).success, "is not an IPv4 address"),
  turnUserLifetime: z.string().regex(/^\d+(s|m|h)$/, { message: "must be a duration like 30m or 1h" }),
  nodeMemoryMb: z.number().int().min(512).max(1048576),
  swarmAddressPool: cidr4,
  vpn: z.enum(["none", "tailscale", "headscale"]),
  admins: z.array(z.email({ message: "is not an email address" })),
  /** Label under the domain for the Headscale control server (vpn: headscale). */
  headscaleHost: hostLabel,
  /** Run Headscale's embedded DERP relay (opens 3478/udp on the control node). */
  headscaleDerp: z.boolean(),
  deployerTag: optionalString((v) => /^tag:[A-Za-z][A-Za-z0-9-]*$/.test(v), "is not a Tailscale tag (tag:name: a letter, then letters, digits, -)"),
  region: optionalString((v) => (DO_REGIONS as readonly string[]).includes(v), `is not a DigitalOcean region slug; allowed: ${DO_REGIONS.join(", ")}`),
  vpcRange: cidr4,
  meshCidr: cidr4,
  meshPskVersion: z.number().int().min(1),
  cloudflareZoneId: optionalString((v) => /^[a-f0-9]{32}$/.test(v), "is not a Cloudflare zone id (32 lower-case hex characters, on the zone's overview page)"),
  sshKeys: z.array(z.string().min(1)),
  backup: z.enum(["auto", "on", "off"]),
  backupRepository: optionalString((v) => S3_REPOSITORY.test(v) || (LOCAL_REPOSITORY.test(v) && !v.split("/").includes("..")), "is not a restic repository; allowed: s3:https://HOST/BUCKET[/PREFIX] or an absolute path"),
  backupS3AccessKeyId: z.string(),
  backupS3SecretAccessKey: z.string(),
  backupSpacesRegion: optionalString((v) => (SPACES_REGIONS as readonly string[]).includes(v), `is not a region with Spaces; allowed: ${SPACES_REGIONS.join(", ")}`),
  backupIntervalHours: z.number().int().min(1).max(24),
  backupKeepDaily: z.number().int().min(1).max(366),
  backupKeepWeekly: z.number().int().min(0).max(260),
  backupKeepMonthly: z.number().int().min(0).max(600),
  /** public: Traefik's ports open to the internet; funnel: reachable only through Tailscale Funnel. */
  ingress: z.enum(["public", "funnel"]),
  funnelFqdn: optionalString((v) => FUNNEL_FQDN.test(v), "is not a Tailscale Funnel name <host>.<tailnet>.ts.net (the tailnet's DNS name is on the admin console's DNS page)"),
  /** With ingress funnel, TURN (UDP) cannot go through Funnel: its ports are opened only if this says so. */
  funnelTurnPorts: z.boolean(),
  cloudflareAccountId: optionalString((v) => /^[a-f0-9]{32}$/.test(v), "is not a Cloudflare account id (32 lower-case hex characters, on the account's overview page)"),
  nodes: z.array(nodeSchema),
  images: z.strictObject(
    Object.fromEntries(Object.keys(DEFAULT_IMAGES).map((k) => [k, pinnedImage.optional()])) as Record<ImageName, z.ZodOptional<typeof pinnedImage>>,
  ),
});
type RawSettings = z.infer<typeof settingsSchema>;

/** Secret keys: values must arrive encrypted (`pulumi config set --secret`). */
export const SECRET_KEYS = ["acmeDnsToken", "turnTlsCertPem", "turnTlsKeyPem", "backupS3AccessKeyId", "backupS3SecretAccessKey"] as const;

/**
 * Defaults of the keys Pulumi.yaml does not declare (the rest are there): object-valued keys, and
 * the optional secrets (a declared secret needs a value or a default, and the CLI refuses a
 * secret's default: pulumi/pulumi#21865).
 */
export const OBJECT_DEFAULTS: Partial<Record<keyof RawSettings, unknown>> = {
  nodes: [],
  images: {},
  acmeDnsToken: "",
  turnTlsCertPem: "",
  turnTlsKeyPem: "",
  backupS3AccessKeyId: "",
  backupS3SecretAccessKey: "",
};

type SecretKey = (typeof SECRET_KEYS)[number];

/** Where backups go: a Spaces bucket the program creates, any S3 endpoint, or a path on the (local) node. */
export type BackupRepository = { kind: "spaces"; region: string } | { kind: "s3"; url: string } | { kind: "path"; path: string };

/** Resolved backup settings; absent when backups are off. */
export interface BackupSettings {
  repository: BackupRepository;
  intervalHours: number;
  retention: { daily: number; weekly: number; monthly: number };
}

export interface Settings extends Omit<RawSettings, "images" | "serverName" | "dockerSocketGid" | SecretKey> {
  /** Group owning /var/run/docker.sock where the socket proxy runs. */
  dockerSocketGid: number;
  stack: string;
  /** Secret settings leave this module only as secret outputs, and only when set. */
  secrets: Partial<Record<SecretKey, pulumi.Output<string>>>;
  serverName: string;
  images: Record<ImageName, string>;
  /** FQDN Traefik serves the client and federation APIs on. */
  matrixFqdn: string;
  turnFqdn: string;
  /** FQDN of the Headscale control server (used only with vpn: headscale). */
  headscaleFqdn: string;
  /** Whether Traefik must serve /.well-known/matrix/* for the server name. */
  servesWellKnown: boolean;
  /** Backups, when on (the S3 keys of an "s3" repository are in `secrets`). */
  backupPlan?: BackupSettings;
  /** Accepted but worth saying (index.ts logs them), e.g. a static TURN certificate near its expiry. */
  warnings?: string[];
}

export class SettingsError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid stack config (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n${problems.map((p) => `  ${p}`).join("\n")}`);
    this.name = "SettingsError";
  }
}

export function fqdn(label: string, domain: string): string {
  return label === "@" ? domain : `${label}.${domain}`;
}

function isUnder(name: string, domain: string): boolean {
  return name === domain || name.endsWith(`.${domain}`);
}

function describe(value: unknown): string {
  if (value === undefined) return "missing";
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function valueAt(raw: Record<string, unknown>, path: PropertyKey[]): unknown {
  let cur: unknown = raw;
  for (const key of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[key];
  }
  return cur;
}

function shapeAt(path: PropertyKey[]): Record<string, unknown> {
  // Only top-level objects and images are strict objects with known keys.
  if (path.length === 0) return settingsSchema.shape;
  if (path[0] === "images") return DEFAULT_IMAGES;
  if (path[0] === "nodes") return nodeSchema.shape;
  return {};
}

function closest(word: string, candidates: string[]): string | undefined {
  const distance = (a: string, b: string): number => {
    const row = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
      let prev = row[0]!;
      row[0] = i;
      for (let j = 1; j <= b.length; j++) {
        const next = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
        prev = row[j]!;
        row[j] = next;
      }
    }
    return row[b.length]!;
  };
  const best = candidates.map((c) => ({ c, d: distance(word, c) })).sort((x, y) => x.d - y.d)[0];
  return best && best.d <= Math.max(2, Math.floor(word.length / 3)) ? best.c : undefined;
}

function keyName(path: PropertyKey[]): string {
  const [head, ...rest] = path;
  return `${PROJECT}:${String(head)}${rest.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("")}`;
}

/** Stand-ins distinctive enough that a problem quoting one is about a stand-in, not the operator's value. */
const INERT_TEXTS = ["example.invalid", "10.255.0.0/16", "1h"];

/** The first of a few plain values the key's schema accepts: what an invalid key stands in as while the other rules run. */
export function inertValue(schema: z.ZodType): unknown {
  const options = schema instanceof z.ZodEnum ? (schema.options as unknown[]) : [];
  const candidates: unknown[] = [undefined, "", false, [], {}, ...options, 1024, 1, ...INERT_TEXTS];
  return candidates.find((c) => schema.safeParse(c).success);
}

/** `raw` with every invalid top-level key replaced by an inert value and unknown keys dropped, parsed. */
function withInertValues(raw: Record<string, unknown>, invalid: string[], problems: string[]): RawSettings {
  const shape = settingsSchema.shape as Record<string, z.ZodType>;
  const repaired: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) if (key in shape) repaired[key] = value;
  for (const key of invalid) if (key in shape) repaired[key] = inertValue(shape[key]!);
  const again = settingsSchema.safeParse(repaired);
  // A key no plain value satisfies: the rules across keys cannot run this time.
  if (!again.success) throw new SettingsError(problems);
  return again.data;
}

/** Whether a problem names `key` (as its own key or in its text). */
function mentions(problem: string, key: string): boolean {
  return new RegExp(`(^|[^A-Za-z0-9])${key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}([^A-Za-z0-9]|$)`).test(problem);
}

/**
 * Validates config values (already JSON-decoded) and derives the typed settings.
 * Reports every problem at once, each naming its key; throws SettingsError.
 */
export function parseSettings(stack: string, raw: Record<string, unknown>, secretKeys: ReadonlySet<string> = new Set(), facts: HostFacts = {}): Settings {
  const problems: string[] = [];
  const withDefaults: Record<string, unknown> = { ...OBJECT_DEFAULTS, ...raw };
  const parsed = settingsSchema.safeParse(withDefaults);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      if (issue.code === "unrecognized_keys") {
        const known = Object.keys(shapeAt(issue.path));
        for (const key of issue.keys) {
          const guess = closest(key, known);
          problems.push(`${keyName([...issue.path, key])}: is not a known setting${guess ? ` (did you mean "${guess}"?)` : `; allowed: ${known.join(", ")}`}`);
        }
        continue;
      }
      const value = valueAt(withDefaults, issue.path);
      const message = value === undefined ? "is required but not set" : `${describe(value)} ${issue.message}`;
      problems.push(`${keyName(issue.path)}: ${message}`);
    }
  }
  // One round: the rules across keys run too, on an inert stand-in for each invalid key, and what
  // they say about a key already reported (or that mentions one) is left out.
  const invalid = parsed.success ? [] : [...new Set(parsed.error.issues.flatMap((i) => (i.path.length > 0 ? [String(i.path[0])] : [])))];
  const s = parsed.success ? parsed.data : withInertValues(withDefaults, invalid, problems);
  const reported = problems.length;

  for (const key of SECRET_KEYS) {
    if (s[key] !== "" && !secretKeys.has(`${PROJECT}:${key}`)) {
      problems.push(`${PROJECT}:${key}: is a secret; set it with \`pulumi config set --secret ${key} ...\``);
    }
  }

  const warnings: string[] = [];
  const serverName = s.serverName === "" ? s.domain : s.serverName;
  // Through Funnel the Matrix APIs are served on the ts.net name, nowhere else.
  const matrixFqdn = s.ingress === "funnel" && s.funnelFqdn !== "" ? s.funnelFqdn : fqdn(s.matrixHost, s.domain);
  const turnFqdn = fqdn(s.turnHost, s.domain);
  const headscaleFqdn = fqdn(s.headscaleHost, s.domain);

  if (s.delegation === "none" && !isUnder(serverName, s.domain)) {
    problems.push(`${PROJECT}:serverName: "${serverName}" is not under the domain "${s.domain}"; with delegation "none" it must be (or set delegation to well-known or srv)`);
  }
  if (s.delegation === "none" && serverName !== matrixFqdn) {
    problems.push(`${PROJECT}:delegation: "none" needs serverName to be the Matrix host ${matrixFqdn}; use well-known or srv to delegate ${serverName}`);
  }
  if (s.delegation === "srv") {
    // Remote servers demand a certificate for the server name from the SRV target (Matrix
    // server-server API, "Resolving server names"); the server name's own address is elsewhere, so
    // only DNS-01 can obtain it, and the SRV record and that challenge live in the domain's zone.
    if (!isUnder(serverName, s.domain)) {
      problems.push(`${PROJECT}:serverName: "${serverName}" is not under the domain "${s.domain}"; delegation "srv" publishes _matrix-fed._tcp.${serverName} in that zone, so it must be`);
    }
    if (s.acmeDnsToken === "") {
      problems.push(
        `${PROJECT}:delegation: "srv" needs ${PROJECT}:acmeDnsToken (a Cloudflare DNS token for ACME DNS-01): federating servers demand a certificate for ${serverName} from ${matrixFqdn}; set it with \`pulumi config set --secret acmeDnsToken ...\`, or use delegation "well-known"`,
      );
    }
  }
  if (s.turnMinPort >= s.turnMaxPort) {
    problems.push(`${PROJECT}:turnMinPort: ${s.turnMinPort} must be below turnMaxPort (${s.turnMaxPort})`);
  } else if (s.turnMaxPort - s.turnMinPort > 10000) {
    problems.push(`${PROJECT}:turnMaxPort: the relay range ${s.turnMinPort}-${s.turnMaxPort} is over 10000 ports; allowed: at most 10000`);
  }
  const publicPorts = { httpPort: s.httpPort, httpsPort: s.httpsPort, federationPort: s.federationPort, adminPort: s.adminPort };
  const seen = new Map<number, string>();
  for (const [key, value] of Object.entries(publicPorts)) {
    const other = seen.get(value);
    if (other) problems.push(`${PROJECT}:${key}: ${value} is already used by ${other}; each published port must differ`);
    seen.set(value, key);
  }
  if (s.federationMode === "allowlist" && s.federationAllowlist.length === 0) {
    problems.push(`${PROJECT}:federationAllowlist: is empty but federationMode is "allowlist"; list the server names to federate with, or use federationMode "closed"`);
  }
  if (s.federationMode !== "allowlist" && s.federationAllowlist.length > 0) {
    problems.push(`${PROJECT}:federationAllowlist: is set but federationMode is "${s.federationMode}"; it only applies to "allowlist"`);
  }
  warnings.push(...turnTlsProblems(s, turnFqdn, facts.now ?? new Date(), problems));
  if (s.acmeDnsToken !== "" && s.acmeCa === "none") {
    problems.push(`${PROJECT}:acmeDnsToken: is set but acmeCa is "none"; choose letsencrypt or drop the token`);
  }

  problems.push(...ingressProblems(s));
  const postgresProblem = postgresMajorProblem(s.images.postgres);
  if (postgresProblem) problems.push(postgresProblem);

  if (s.target === "local") {
    for (const [key, value] of Object.entries(publicPorts)) {
      if (value < 1024) problems.push(`${PROJECT}:${key}: ${value} is a privileged port; the local target publishes unprivileged ports (1024-65535)`);
    }
    if (s.deployerTag !== "") problems.push(`${PROJECT}:deployerTag: target "local" has no tailnet; it is for target "digitalocean" with vpn "tailscale"`);
    if (s.nodes.length > 0) problems.push(`${PROJECT}:nodes: target "local" runs on the local Docker engine; droplet nodes and sizes are for target "digitalocean"`);
    if (s.region !== "") problems.push(`${PROJECT}:region: target "local" has no region; it is for target "digitalocean"`);
    if (s.cloudflareZoneId !== "") problems.push(`${PROJECT}:cloudflareZoneId: target "local" has no public DNS; it is for target "digitalocean"`);
    if (s.vpn !== "none") problems.push(`${PROJECT}:vpn: target "local" has no VPN; allowed: none`);
    if (s.headscaleDerp) problems.push(`${PROJECT}:headscaleDerp: is for vpn "headscale" on target "digitalocean"; allowed: false`);
    if (s.acmeCa !== "none") problems.push(`${PROJECT}:acmeCa: target "local" uses Traefik's self-signed certificate; allowed: none`);
    if (s.dockerSocketGid === undefined && facts.localDockerSocketGid === 0) {
      problems.push(`${PROJECT}:dockerSocketGid: /var/run/docker.sock here belongs to group 0 (root), and the socket proxy never runs in the root group; give the socket a group of its own (Docker's "docker" group) or set dockerSocketGid (1-65535)`);
    }
  } else {
    if (s.region === "") problems.push(`${PROJECT}:region: is required for target "digitalocean"; allowed: ${DO_REGIONS.join(", ")}`);
    if (s.vpn === "none") problems.push(`${PROJECT}:vpn: cloud nodes have no open SSH port, so admins need a VPN; allowed: tailscale, headscale`);
    if (s.acmeCa !== "none" && s.acmeEmail === "") problems.push(`${PROJECT}:acmeEmail: is required when acmeCa is "${s.acmeCa}" (the CA's expiry notices)`);
    if (s.acmeCa === "none" && s.ingress === "public") problems.push(`${PROJECT}:acmeCa: "none" leaves a public server without a trusted certificate; allowed: letsencrypt, letsencrypt-staging`);
    if (s.deployerTag !== "" && s.vpn !== "tailscale") problems.push(`${PROJECT}:deployerTag: is a Tailscale tag for CI runners; it needs vpn "tailscale" (vpn is "${s.vpn}")`);
    if (s.vpn === "tailscale" && s.admins.length === 0) problems.push(`${PROJECT}:admins: lists no one, so no one could reach the nodes over the tailnet; add at least one email`);
    if (s.turnEnabled && s.turnExternalIp !== "") problems.push(`${PROJECT}:turnExternalIp: is for the local target; on DigitalOcean the TURN node's public address is used`);
    const [gidMin, gidMax] = DOCKER_SOCKET_GID_RANGE;
    if (s.dockerSocketGid !== undefined && (s.dockerSocketGid < gidMin || s.dockerSocketGid > gidMax)) {
      problems.push(`${PROJECT}:dockerSocketGid: ${s.dockerSocketGid} may already be taken on a fresh Debian droplet; allowed: ${gidMin}-${gidMax} (Debian Policy's reserved class, which nothing allocates; default ${DOCKER_SOCKET_GID})`);
    }
    if (s.cloudflareZoneId === "") problems.push(`${PROJECT}:cloudflareZoneId: is required for target "digitalocean" (the Cloudflare zone of ${s.domain}; its overview page shows the id)`);
    problems.push(...headscaleProblems(s, { matrixFqdn, turnFqdn, serverName, headscaleFqdn }));
    problems.push(...vpcProblems(s.vpcRange, s.swarmAddressPool));
    problems.push(...meshProblems(s.meshCidr, s.vpcRange, s.swarmAddressPool, s.nodes));
    problems.push(...nodeProblems(s.nodes, s.turnEnabled));
    problems.push(...reservedNodeNameProblems(s.nodes, s.vpn));
  }

  const backup = backupPlan(s, problems);
  if (backup?.repository.kind === "spaces" && facts.spacesKeys === false) {
    // The provider creates buckets with Spaces keys, not the API token (@pulumi/digitalocean provider.d.ts).
    problems.push(
      `digitalocean:spacesAccessId: is not set, and the backups' Spaces bucket needs it and digitalocean:spacesSecretKey (\`pulumi config set --secret digitalocean:spacesAccessId ...\`, or SPACES_ACCESS_KEY_ID/SPACES_SECRET_ACCESS_KEY); or set hardened-matrix:backup to off`,
    );
  }

  if (invalid.length > 0) {
    const derived = problems.splice(reported).filter((p) => !invalid.some((k) => mentions(p, k)) && !INERT_TEXTS.some((t) => p.includes(t)));
    problems.push(...derived);
  }
  if (problems.length > 0) throw new SettingsError(problems);

  const images = { ...DEFAULT_IMAGES };
  for (const [name, ref] of Object.entries(s.images)) if (ref) images[name as ImageName] = ref;

  const { acmeDnsToken, turnTlsCertPem, turnTlsKeyPem, backupS3AccessKeyId, backupS3SecretAccessKey, ...plain } = s;
  const secretValues: Record<SecretKey, string> = { acmeDnsToken, turnTlsCertPem, turnTlsKeyPem, backupS3AccessKeyId, backupS3SecretAccessKey };
  const secrets: Settings["secrets"] = {};
  for (const key of SECRET_KEYS) if (secretValues[key] !== "") secrets[key] = pulumi.secret(secretValues[key]);
  return {
    ...plain,
    // local: the group of the local socket; droplets: the gid cloud-init gives the docker group.
    dockerSocketGid: s.dockerSocketGid ?? (s.target === "local" ? (facts.localDockerSocketGid ?? DOCKER_SOCKET_GID) : DOCKER_SOCKET_GID),
    secrets,
    stack,
    serverName,
    images,
    matrixFqdn,
    turnFqdn,
    headscaleFqdn,
    // With Funnel the server name's documents come from Cloudflare (components/platform/wellKnown.ts), not Traefik.
    servesWellKnown: s.ingress === "public" && s.delegation === "well-known" && isUnder(serverName, s.domain) && serverName !== matrixFqdn,
    ...(backup ? { backupPlan: backup } : {}),
    ...(warnings.length > 0 ? { warnings } : {}),
  };
}

/**
 * TURN over TLS. "acme": the turn-cert service obtains and renews the certificate by DNS-01, so the
 * Cloudflare token also goes to the turn node (README: TURN). "static": the operator's certificate,
 * checked here because nothing renews it. Pushes problems; returns warnings.
 */
function turnTlsProblems(s: RawSettings, turnFqdn: string, now: Date, problems: string[]): string[] {
  const key = (k: string): string => `${PROJECT}:${k}`;
  const pems = s.turnTlsCertPem !== "" || s.turnTlsKeyPem !== "";
  if (s.turnTls !== "off" && !s.turnEnabled) problems.push(`${key("turnTls")}: is "${s.turnTls}" but turnEnabled is false; allowed: off`);
  if (s.turnTls !== "static" && pems) {
    problems.push(`${key(s.turnTlsCertPem !== "" ? "turnTlsCertPem" : "turnTlsKeyPem")}: is set but turnTls is "${s.turnTls}"; set turnTls to static to serve your own certificate (renewed by hand), or drop it and use turnTls acme`);
  }
  if (s.turnTls === "acme") {
    if (s.acmeCa === "none") problems.push(`${key("turnTls")}: "acme" needs acmeCa letsencrypt or letsencrypt-staging (acmeCa is "none"); allowed here: off, static`);
    if (s.acmeDnsToken === "") {
      problems.push(`${key("turnTls")}: "acme" obtains the TURN certificate by DNS-01 and needs ${key("acmeDnsToken")} (a Cloudflare token with DNS edit on the zone); set it with \`pulumi config set --secret acmeDnsToken ...\`, or use turnTls off`);
    }
  }
  if (s.turnTls !== "static") return [];
  if (s.turnTlsCertPem === "" || s.turnTlsKeyPem === "") {
    problems.push(`${key(s.turnTlsCertPem === "" ? "turnTlsCertPem" : "turnTlsKeyPem")}: is missing; turnTls "static" needs both turnTlsCertPem and turnTlsKeyPem`);
    return [];
  }
  const checked = checkStaticTurnCert(s.turnTlsCertPem, s.turnTlsKeyPem, turnFqdn, now);
  problems.push(...checked.problems.map((p) => `${PROJECT}:${p}`));
  return checked.warnings.map((w) => `${PROJECT}:${w}`);
}

/**
 * Backups are on by default where there is somewhere off the node to put them: on DigitalOcean (a
 * Spaces bucket in the stack's region), and on the local target only once backupRepository names a
 * repository (the local target is a try-out with no off-site store; a copy on the same disk is no backup).
 */
function backupPlan(s: RawSettings, problems: string[]): BackupSettings | undefined {
  const key = (k: string) => `${PROJECT}:${k}`;
  const isS3 = s.backupRepository.startsWith("s3:");
  const isPath = s.backupRepository.startsWith("/");
  const hasKeys = s.backupS3AccessKeyId !== "" || s.backupS3SecretAccessKey !== "";
  if (isS3 && (s.backupS3AccessKeyId === "" || s.backupS3SecretAccessKey === "")) {
    problems.push(`${key(s.backupS3AccessKeyId === "" ? "backupS3AccessKeyId" : "backupS3SecretAccessKey")}: is missing; an s3: backupRepository needs both backupS3AccessKeyId and backupS3SecretAccessKey (set with --secret)`);
  }
  if (!isS3 && hasKeys) {
    problems.push(`${key(s.backupS3AccessKeyId !== "" ? "backupS3AccessKeyId" : "backupS3SecretAccessKey")}: is set but backupRepository is not an s3: URL; the program's own Spaces bucket gets its own key`);
  }
  if (s.backupSpacesRegion !== "" && (s.target !== "digitalocean" || s.backupRepository !== "")) {
    problems.push(`${key("backupSpacesRegion")}: only applies to the Spaces bucket of target "digitalocean" with an empty backupRepository`);
  }
  if (s.target === "digitalocean" && isPath) {
    problems.push(`${key("backupRepository")}: "${s.backupRepository}" is a path on the node, which is not off-site; allowed on digitalocean: empty (a Spaces bucket) or s3:https://HOST/BUCKET`);
  }
  const on = s.backup === "on" || (s.backup === "auto" && (s.target === "digitalocean" || s.backupRepository !== ""));
  if (!on) return undefined;
  let repository: BackupRepository;
  if (isS3) repository = { kind: "s3", url: s.backupRepository };
  else if (isPath) repository = { kind: "path", path: s.backupRepository };
  else if (s.target === "digitalocean") {
    const region = s.backupSpacesRegion || s.region;
    if (s.region !== "" && !(SPACES_REGIONS as readonly string[]).includes(region)) {
      problems.push(`${key("backupSpacesRegion")}: region "${region}" has no Spaces; set backupSpacesRegion to one of ${SPACES_REGIONS.join(", ")}, or backupRepository`);
    }
    repository = { kind: "spaces", region };
  } else {
    problems.push(`${key("backupRepository")}: is required when backup is "on" for target "local" (an absolute path on this machine or s3:https://HOST/BUCKET)`);
    return undefined;
  }
  return {
    repository,
    intervalHours: s.backupIntervalHours,
    retention: { daily: s.backupKeepDaily, weekly: s.backupKeepWeekly, monthly: s.backupKeepMonthly },
  };
}

/** `ingress: funnel` and the keys that go with it. */
function ingressProblems(s: RawSettings): string[] {
  const problems: string[] = [];
  const key = (k: string) => `${PROJECT}:${k}`;
  if (s.ingress === "public") {
    if (s.cloudflareAccountId !== "") problems.push(`${key("cloudflareAccountId")}: is set but ingress is "public"; it is used only by ingress "funnel"`);
    if (s.funnelFqdn !== "") problems.push(`${key("funnelFqdn")}: is set but ingress is "public"; it only applies to ingress "funnel"`);
    if (s.funnelTurnPorts) problems.push(`${key("funnelTurnPorts")}: is true but ingress is "public"; it only applies to ingress "funnel"`);
    return problems;
  }
  if (s.target === "local") problems.push(`${key("ingress")}: "funnel" needs a Tailscale tailnet, which target "local" has none of; allowed: public`);
  else if (s.vpn !== "tailscale") problems.push(`${key("ingress")}: "funnel" works only with vpn "tailscale" (Funnel is a Tailscale service; Headscale has none); vpn is "${s.vpn}"; allowed: public`);
  if (s.funnelFqdn === "") problems.push(`${key("funnelFqdn")}: is required with ingress "funnel": the node's name <host>.<tailnet>.ts.net (the tailnet's DNS name is on the admin console's DNS page)`);
  if (s.delegation !== "well-known") {
    problems.push(`${key("delegation")}: "${s.delegation}" cannot work with ingress "funnel" (the certificate is for the ts.net name, so only /.well-known/matrix/server with an explicit port can delegate to it); allowed: well-known`);
  }
  if (s.target !== "local") {
    if (s.acmeCa !== "none") problems.push(`${key("acmeCa")}: "${s.acmeCa}" with ingress "funnel": Tailscale holds the ts.net certificate and no port is open for an ACME challenge; allowed: none`);
    if (s.cloudflareAccountId === "") problems.push(`${key("cloudflareAccountId")}: is required with ingress "funnel": a Cloudflare Worker on the zone serves /.well-known/matrix for ${s.serverName || s.domain}`);
  }
  if (s.turnEnabled && !s.funnelTurnPorts) {
    problems.push(`${key("turnEnabled")}: TURN is UDP and cannot go through Funnel, so with ingress "funnel" it needs its own ports open to the internet; set turnEnabled false, or set funnelTurnPorts true to open them`);
  }
  if (!s.turnEnabled && s.funnelTurnPorts) problems.push(`${key("funnelTurnPorts")}: is true but turnEnabled is false; there are no TURN ports to open`);
  // The Funnel network takes the pool's last /24 (render/funnel.ts funnelSubnet); a malformed pool is reported by its own check.
  const poolPrefix = Number(/\/(\d+)$/.exec(s.swarmAddressPool)?.[1]);
  if (poolPrefix > 23) problems.push(`${key("swarmAddressPool")}: "${s.swarmAddressPool}" with ingress "funnel" must be /23 or larger: its last /24 is the Funnel network's, the rest Swarm's`);
  return problems;
}

function cidrBounds(cidr: string): [number, number] {
  const [ip, len] = cidr.split("/") as [string, string];
  const base = ip.split(".").reduce((acc, octet) => acc * 256 + Number(octet), 0);
  const size = 2 ** (32 - Number(len));
  const start = base - (base % size);
  return [start, start + size - 1];
}

export function cidrsOverlap(a: string, b: string): boolean {
  const [a0, a1] = cidrBounds(a);
  const [b0, b1] = cidrBounds(b);
  return a0 <= b1 && b0 <= a1;
}

const RFC1918 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

function vpcProblems(vpcRange: string, swarmAddressPool: string): string[] {
  const key = `${PROJECT}:vpcRange`;
  const problems: string[] = [];
  const len = Number(vpcRange.split("/")[1]);
  // DigitalOcean's limits for a VPC range.
  if (len < 16 || len > 28) problems.push(`${key}: "${vpcRange}" must be between a /16 and a /28 (DigitalOcean's limits)`);
  const [v0, v1] = cidrBounds(vpcRange);
  if (!RFC1918.some((r) => { const [r0, r1] = cidrBounds(r); return v0 >= r0 && v1 <= r1; })) {
    problems.push(`${key}: "${vpcRange}" is not inside a private range (${RFC1918.join(", ")})`);
  }
  if (cidrsOverlap(vpcRange, swarmAddressPool)) {
    problems.push(`${key}: "${vpcRange}" overlaps swarmAddressPool "${swarmAddressPool}"; overlay addresses would shadow node addresses`);
  }
  return problems;
}

/**
 * Where each engine takes its local bridges (docker0, docker_gwbridge) from by default:
 * 172.17.0.0/16 up to 172.31.0.0/16, and 192.168.0.0/16 in /20s (moby
 * libnetwork/ipamutils/utils.go localScopeDefaultNetworks).
 */
const DOCKER_LOCAL_POOLS = ["172.17.0.0/16", "172.18.0.0/15", "172.20.0.0/14", "172.24.0.0/13", "192.168.0.0/16"];

/** Tailscale's and Headscale's CGNAT range: node VPN addresses come from here. */
export const TAILNET_IPV4_RANGE = "100.64.0.0/10";

/**
 * The mesh range: private, clear of every other range of the stack, and big enough that the
 * node names hash to distinct addresses. The swarm pool must be clear of the tailnet too.
 */
function meshProblems(meshCidr: string, vpcRange: string, swarmAddressPool: string, nodes: NodeSettings[]): string[] {
  const key = `${PROJECT}:meshCidr`;
  const problems: string[] = [];
  const len = Number(meshCidr.split("/")[1]);
  if (len < 16 || len > 28) problems.push(`${key}: "${meshCidr}" must be between a /16 and a /28 (a /16 keeps hashed node addresses apart)`);
  if (!inPrivateRange(meshCidr)) problems.push(`${key}: "${meshCidr}" is not inside a private range (${RFC1918.join(", ")})`);
  const others: Array<[string, string]> = [
    ["vpcRange", vpcRange],
    ["swarmAddressPool", swarmAddressPool],
    ["the tailnet range", TAILNET_IPV4_RANGE],
  ];
  for (const [what, range] of others) {
    if (cidrsOverlap(meshCidr, range)) problems.push(`${key}: "${meshCidr}" overlaps ${what} "${range}"; allowed: a private range clear of it`);
  }
  if (cidrsOverlap(swarmAddressPool, TAILNET_IPV4_RANGE)) {
    problems.push(`${PROJECT}:swarmAddressPool: "${swarmAddressPool}" overlaps the tailnet range "${TAILNET_IPV4_RANGE}"; overlay addresses would shadow VPN addresses`);
  }
  for (const [k, range] of [["meshCidr", meshCidr], ["swarmAddressPool", swarmAddressPool]] as const) {
    const hit = DOCKER_LOCAL_POOLS.find((p) => cidrsOverlap(range, p));
    if (hit) problems.push(`${PROJECT}:${k}: "${range}" overlaps Docker's local bridge pool "${hit}" (docker0, docker_gwbridge); allowed: a range in 10.0.0.0/8 clear of the others`);
  }
  if (problems.length === 0) {
    for (const [a, b, address] of meshAddressCollisions(nodes.map((n) => n.name), meshCidr)) {
      problems.push(`${key}: nodes "${a}" and "${b}" both hash to ${address} in "${meshCidr}"; rename one of them or choose a larger meshCidr`);
    }
  }
  return problems;
}

function inPrivateRange(cidr: string): boolean {
  const [v0, v1] = cidrBounds(cidr);
  return RFC1918.some((r) => {
    const [r0, r1] = cidrBounds(r);
    return v0 >= r0 && v1 <= r1;
  });
}

/**
 * vpn: headscale needs one control node of its own: Headscale serves its control protocol on public
 * 443 and can't share it with Traefik, and it must run before the swarm (which needs the VPN).
 */
function headscaleProblems(
  s: Pick<RawSettings, "vpn" | "nodes" | "admins" | "headscaleHost" | "headscaleDerp" | "ingress" | "deployerTag" | "acmeCa">,
  names: { matrixFqdn: string; turnFqdn: string; serverName: string; headscaleFqdn: string },
): string[] {
  const problems: string[] = [];
  const controlNodes = s.nodes.map((n, i) => ({ n, i })).filter(({ n }) => n.roles.includes("headscale"));
  if (s.vpn !== "headscale") {
    for (const { i } of controlNodes) problems.push(`${PROJECT}:nodes[${i}].roles: "headscale" is only for vpn "headscale" (vpn is "${s.vpn}")`);
    if (s.headscaleDerp) problems.push(`${PROJECT}:headscaleDerp: is only for vpn "headscale" (vpn is "${s.vpn}"); allowed: false`);
    return problems;
  }
  if (controlNodes.length !== 1) problems.push(`${PROJECT}:nodes: has ${controlNodes.length} nodes with role "headscale"; allowed: exactly one while vpn is "headscale"`);
  for (const { n, i } of controlNodes) {
    if (n.roles.length !== 1) {
      problems.push(`${PROJECT}:nodes[${i}].roles: the "headscale" node carries no other role (it serves Headscale on public 80/443 and joins no swarm); allowed: ["headscale"]`);
    }
  }
  if (s.admins.length === 0) problems.push(`${PROJECT}:admins: lists no one, so no one could reach the nodes over the tailnet; add at least one email`);
  if (s.ingress === "funnel") problems.push(`${PROJECT}:ingress: "funnel" is a Tailscale service and does not exist with vpn "headscale"; allowed: public`);
  if (s.deployerTag !== "") problems.push(`${PROJECT}:deployerTag: CI runners join Tailscale's tailnet, which vpn "headscale" does not use; allowed: "" (empty)`);
  // tailscaled verifies the control server with the system roots, then only Let's Encrypt's production
  // roots baked in (tailscale/tailscale net/tlsdial/tlsdial.go, net/bakedroots/bakedroots.go), and
  // Pulumi's own calls with Node's public roots: a staging certificate (or none) cannot serve Headscale.
  if (s.acmeCa !== "letsencrypt") problems.push(`${PROJECT}:acmeCa: "${s.acmeCa}" cannot serve Headscale: its clients (tailscaled, and Pulumi's calls to its API) trust only public roots, which a ${s.acmeCa === "none" ? "missing" : "Let's Encrypt staging"} certificate does not chain to; allowed with vpn "headscale": letsencrypt`);
  if (s.headscaleHost === "@") problems.push(`${PROJECT}:headscaleHost: "@" would put Headscale on the domain itself; allowed: a DNS label of its own`);
  for (const [what, name] of [["the Matrix host", names.matrixFqdn], ["the TURN host", names.turnFqdn], ["the server name", names.serverName]] as const) {
    if (names.headscaleFqdn === name) problems.push(`${PROJECT}:headscaleHost: ${names.headscaleFqdn} is also ${what}; Headscale needs a name of its own (its own node answers it)`);
  }
  return problems;
}

/** The PostgreSQL major version of a `postgres:<major>...` image reference. */
export function postgresMajor(image: string): number | undefined {
  const m = /(?:^|\/)postgres:(\d+)(?:[.-]|$)/.exec(image);
  return m ? Number(m[1]) : undefined;
}

/**
 * PostgreSQL refuses a data directory written by another major version ("database files are
 * incompatible with server", postgres/postgres src/backend/utils/init/miscinit.c
 * ValidatePgVersion), so moving the pin across majors would leave the database down; within the
 * pinned major a new image is a restart (README "Upgrades").
 */
function postgresMajorProblem(image: string | undefined): string | undefined {
  if (image === undefined) return undefined;
  const pinned = postgresMajor(DEFAULT_IMAGES.postgres);
  const wanted = postgresMajor(image);
  if (wanted === pinned) return undefined;
  return (
    `${PROJECT}:images.postgres: "${image}" is ${wanted === undefined ? "not a postgres:<major>.<minor> image" : `PostgreSQL ${wanted}`}, but the database is PostgreSQL ${pinned}, ` +
    `whose data files another major version cannot open; allowed: a postgres:${pinned}.x tag (a major upgrade is a restore into a new stack: README "Upgrades")`
  );
}

/**
 * Cluster node names whose per-node resources would take the name of a fixed resource of the same
 * type and parent: two resources with one URN, which the engine refuses (pulumi/pulumi
 * pkg/resource/deploy/step_generator.go generateURN). test/nodeNames.test.ts derives this list
 * from the program's own resource names.
 */
export const RESERVED_NODE_NAMES: ReadonlyArray<{ name: string; vpn: RawSettings["vpn"]; clashesWith: string }> = [
  // components/platform/headscale.ts: node keys are `<server>-<node>-key`, the deployer's `<server>-admin-key`.
  { name: "admin", vpn: "headscale", clashesWith: "the deployer's Headscale key (<server>-admin-key)" },
];

function reservedNodeNameProblems(nodes: NodeSettings[], vpn: RawSettings["vpn"]): string[] {
  return nodes.flatMap((node, i) => {
    const hit = RESERVED_NODE_NAMES.find((r) => r.name === node.name && r.vpn === vpn);
    // The Headscale control node gets no per-node key.
    if (!hit || node.roles.includes("headscale")) return [];
    return [`${PROJECT}:nodes[${i}].name: "${node.name}" would give this node's resources the name of ${hit.clashesWith}, which the engine refuses (one URN twice); allowed: any other DNS label`];
  });
}

function nodeProblems(nodes: NodeSettings[], turnEnabled: boolean): string[] {
  const key = `${PROJECT}:nodes`;
  if (nodes.length === 0) return [`${key}: is empty; target "digitalocean" needs at least one node`];
  const problems: string[] = [];
  const names = new Set<string>();
  nodes.forEach((node, i) => {
    if (names.has(node.name)) problems.push(`${key}[${i}].name: "${node.name}" is used twice; node names must be unique`);
    names.add(node.name);
    if (new Set(node.roles).size !== node.roles.length) problems.push(`${key}[${i}].roles: lists a role twice`);
  });
  const count = (role: NodeRole) => nodes.filter((n) => n.roles.includes(role)).length;
  const managers = count("manager");
  if (managers === 0 || managers % 2 === 0) {
    problems.push(`${key}: has ${managers} Swarm managers; allowed: an odd number (1, 3, 5) so the Raft quorum survives a split`);
  }
  for (const role of ["edge", "db"] as const) {
    if (count(role) !== 1) problems.push(`${key}: has ${count(role)} nodes with role "${role}"; allowed: exactly one`);
  }
  if (turnEnabled && count("turn") !== 1) problems.push(`${key}: has ${count("turn")} nodes with role "turn"; allowed: exactly one while turnEnabled is true`);
  if (!turnEnabled && count("turn") > 0) problems.push(`${key}: a node has role "turn" but turnEnabled is false`);
  return problems;
}

/** Decodes Pulumi config strings: the CLI passes objects, arrays, numbers and booleans as JSON text. */
export function decodeConfigValue(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

/**
 * Reads this project's keys from the Pulumi runtime config (all of them, so an unknown key is
 * reported) and validates them. The only place that reads config.
 */
export function settingsFromConfig(stack: string, all: Record<string, string>, isSecret: (key: string) => boolean, facts: HostFacts = {}): Settings {
  const raw: Record<string, unknown> = {};
  const secretKeys = new Set<string>();
  for (const [fullKey, value] of Object.entries(all)) {
    const [namespace, key] = fullKey.split(":", 2);
    if (namespace !== PROJECT || key === undefined) continue;
    // Secret strings stay strings: JSON-decoding a token that looks like a number would change it.
    raw[key] = (SECRET_KEYS as readonly string[]).includes(key) ? value : decodeConfigValue(value);
    if (isSecret(fullKey)) secretKeys.add(fullKey);
  }
  const spacesKeys = ("digitalocean:spacesAccessId" in all && "digitalocean:spacesSecretKey" in all) || facts.spacesKeysInEnv === true;
  return parseSettings(stack, raw, secretKeys, { ...facts, spacesKeys });
}

function isSecretConfig(key: string): boolean {
  // The SDK keeps this @internal; it is how Config itself knows a value was set with --secret.
  const runtime = pulumi.runtime as unknown as { isConfigSecret?: (k: string) => boolean };
  return runtime.isConfigSecret?.(key) ?? false;
}

/** Reads and validates the stack config. Called once, by index.ts, before any resource exists. */
export function loadSettings(facts: HostFacts = {}): Settings {
  return settingsFromConfig(pulumi.getStack(), pulumi.runtime.allConfig(), isSecretConfig, facts);
}
