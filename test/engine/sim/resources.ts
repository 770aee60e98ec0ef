import { createHash, randomBytes } from "node:crypto";
import { nextSeq, objectsOf, type CloudState, type SimObject } from "./cloud";
import { plain, secret, type Props } from "./values";

/**
 * What the simulated cloud does for each resource type: the outputs it computes, and the refusals
 * the real API would give (409/422 there; an error here, which fails the engine's step the same way).
 */
export interface Ctx {
  cloud: CloudState;
  type: string;
  urn: string;
  /** Inputs as the engine sent them (secret wrappers kept). */
  inputs: Props;
  /** The same, plain. */
  p: Props;
}

export interface Behavior {
  /** Returns the id and the computed outputs (secret-wrapped where the provider marks them sensitive). */
  create(ctx: Ctx): { id: string; computed: Props };
  /** Returns the computed outputs after an in-place update. */
  update?(ctx: Ctx, old: SimObject): Props;
  /** Refuses or cleans up; the object is removed afterwards. */
  delete?(cloud: CloudState, obj: SimObject): void;
  /** A refresh: undefined when the object is gone (or, as a tailnet key may, treated as gone). */
  read?(cloud: CloudState, obj: SimObject): SimObject | undefined;
}

class ApiError extends Error {}
const refuse = (msg: string): never => {
  throw new ApiError(msg);
};

function hex(seed: string, n: number): string {
  return createHash("sha256").update(seed).digest("hex").slice(0, n);
}
function uuid(c: CloudState, kind: string): string {
  const h = hex(`${kind}-${nextSeq(c)}`, 32);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
/** Documentation ranges (RFC 5737): never a real host. */
function publicIpv4(c: CloudState): string {
  const n = nextSeq(c);
  return `203.0.${113 + Math.floor(n / 250) % 3}.${(n % 250) + 2}`;
}
function live(c: CloudState, type: string): SimObject[] {
  return objectsOf(c, type);
}
const str = (v: unknown): string => (typeof v === "string" ? v : String(v ?? ""));

const DROPLET = "digitalocean:index/droplet:Droplet";
const VOLUME = "digitalocean:index/volume:Volume";
const VPC = "digitalocean:index/vpc:Vpc";
const RESERVED_IP = "digitalocean:index/reservedIp:ReservedIp";
const TAILNET_KEY = "tailscale:index/tailnetKey:TailnetKey";
const DOCKER_SERVICE = "docker:index/service:Service";

/** Names the real API keeps unique, by type: the scope a name must be unique in. */
function uniqueName(c: CloudState, type: string, name: string, scope: (o: SimObject) => boolean, what: string): void {
  const clash = live(c, type).find((o) => o.state.name === name && scope(o));
  if (clash) refuse(`${what} named "${name}" already exists (id ${clash.id})`);
}

/** Droplets join the tailnet when cloud-init runs `tailscale up` with a key that is valid at boot. */
function joinTailnet(c: CloudState, droplet: { name: string; userData: string; createdAt: string; id: string }): void {
  const at = Date.parse(droplet.createdAt);
  for (const key of live(c, TAILNET_KEY)) {
    const k = str(key.state.key);
    if (!k || !droplet.userData.includes(k)) continue;
    const expired = at >= Date.parse(str(key.state.expiresAt));
    const usedUp = key.state.reusable !== true && key.state.used === true;
    if (expired || usedUp) return; // tailscaled logs "invalid key" and the node never joins
    key.state.used = true;
    const n = nextSeq(c);
    c.devices.push({
      hostname: droplet.name,
      tags: (key.state.tags as string[] | undefined) ?? [],
      // Boot and `tailscale up` take about a minute.
      created: new Date(at + 60_000).toISOString(),
      addresses: [`100.64.${Math.floor(n / 250) % 250}.${(n % 250) + 1}`, `fd7a:115c:a1e0::${n.toString(16)}`],
      nodeId: `n${hex(`${droplet.id}-${n}`, 12)}`,
    });
    return;
  }
}

/** Docker refuses to remove a secret, config or network a service still uses (moby daemon/cluster). */
function inUseBy(c: CloudState, id: string): string[] {
  return live(c, DOCKER_SERVICE)
    .filter((s) => JSON.stringify(s.state.taskSpec ?? {}).includes(`"${id}"`))
    .map((s) => str(s.state.name));
}

const SIZES: Record<string, { memory: number; vcpus: number; disk: number; priceMonthly: number }> = {
  "s-1vcpu-1gb": { memory: 1024, vcpus: 1, disk: 25, priceMonthly: 6 },
  "s-1vcpu-2gb": { memory: 2048, vcpus: 1, disk: 50, priceMonthly: 12 },
  "s-2vcpu-2gb": { memory: 2048, vcpus: 2, disk: 60, priceMonthly: 18 },
  "s-2vcpu-4gb": { memory: 4096, vcpus: 2, disk: 80, priceMonthly: 24 },
  "s-4vcpu-8gb": { memory: 8192, vcpus: 4, disk: 160, priceMonthly: 48 },
};
export const REGIONS = ["ams3", "blr1", "fra1", "lon1", "nyc1", "nyc3", "sfo3", "sgp1", "syd1", "tor1"];

export function sizesInvoke(): Props {
  return {
    id: "sizes",
    sizes: Object.entries(SIZES).map(([slug, s]) => ({ slug, ...s, priceHourly: s.priceMonthly / 730, available: true, regions: REGIONS, transfer: 1, gpuInfos: [] })),
  };
}

function ipInRange(range: string, host: number): string {
  const [base] = range.split("/");
  const parts = base!.split(".").map(Number);
  parts[3] = (parts[3]! + host) % 254 + 1;
  return parts.join(".");
}

const same = (): Props => ({});

export const BEHAVIORS: Record<string, Behavior> = {
  [DROPLET]: {
    create({ cloud, p }) {
      const size = SIZES[str(p.size)] ?? refuse(`422 size "${str(p.size)}" is not available`);
      if (!REGIONS.includes(str(p.region))) refuse(`422 region "${str(p.region)}" is not available`);
      const vpc = p.vpcUuid ? cloud.objects[str(p.vpcUuid)] : undefined;
      if (p.vpcUuid && !vpc) refuse(`422 vpc ${str(p.vpcUuid)} does not exist`);
      if (vpc && vpc.state.region !== p.region) refuse(`422 vpc ${vpc.id} is in ${str(vpc.state.region)}, not ${str(p.region)}`);
      const id = String(400_000_000 + nextSeq(cloud));
      const createdAt = cloud.clock;
      const inVpc = vpc ? live(cloud, DROPLET).filter((d) => d.state.vpcUuid === vpc.id).length : 0;
      joinTailnet(cloud, { name: str(p.name), userData: str(p.userData), createdAt, id });
      return {
        id,
        computed: {
          urn: `do:droplet:${id}`,
          ipv4Address: publicIpv4(cloud),
          ipv4AddressPrivate: ipInRange(str(vpc?.state.ipRange ?? "10.110.0.0/20"), inVpc + 2),
          ipv6Address: `2a03:b0c0:3:d0::${Number(id).toString(16)}`,
          createdAt,
          status: "active",
          locked: false,
          ...size,
          priceHourly: size.priceMonthly / 730,
          volumeIds: [],
        },
      };
    },
    update({ p }, old) {
      const size = SIZES[str(p.size)] ?? refuse(`422 size "${str(p.size)}" is not available`);
      return { ...pick(old.state, ["urn", "ipv4Address", "ipv4AddressPrivate", "ipv6Address", "createdAt", "status", "locked", "volumeIds"]), ...size, priceHourly: size.priceMonthly / 730 };
    },
    delete(cloud, obj) {
      // Destroying a droplet detaches its volumes and unassigns its reserved IP (DO API).
      for (const v of live(cloud, VOLUME)) v.state.dropletIds = ((v.state.dropletIds as string[]) ?? []).filter((d) => d !== obj.id);
      for (const ip of live(cloud, RESERVED_IP)) if (ip.state.dropletId === obj.id) delete ip.state.dropletId;
    },
  },
  [VOLUME]: {
    create({ cloud, p }) {
      if (!REGIONS.includes(str(p.region))) refuse(`422 region "${str(p.region)}" is not available`);
      // Volume names are unique per region (DO API: 409 "a volume with that name already exists").
      uniqueName(cloud, VOLUME, str(p.name), (o) => o.state.region === p.region, `409 a volume in ${str(p.region)}`);
      const id = uuid(cloud, "volume");
      return { id, computed: { urn: `do:volume:${id}`, dropletIds: [], filesystemType: p.initialFilesystemType ?? "", filesystemLabel: p.initialFilesystemLabel ?? "" } };
    },
    update({ p }, old) {
      if (Number(p.size) < Number(old.state.size)) refuse(`422 a volume cannot shrink (${String(old.state.size)} to ${String(p.size)} GiB)`);
      return pick(old.state, ["urn", "dropletIds", "filesystemType", "filesystemLabel"]);
    },
    delete(_c, obj) {
      const on = (obj.state.dropletIds as string[]) ?? [];
      if (on.length > 0) refuse(`409 volume ${obj.id} is attached to droplet ${on.join(", ")}: detach it first`);
    },
  },
  "digitalocean:index/volumeAttachment:VolumeAttachment": {
    create({ cloud, p }) {
      const volume = cloud.objects[str(p.volumeId)] ?? refuse(`404 volume ${str(p.volumeId)} not found`);
      const droplet = cloud.objects[String(p.dropletId)] ?? refuse(`404 droplet ${String(p.dropletId)} not found`);
      if (volume.state.region !== droplet.state.region) refuse(`422 volume ${volume.id} (${str(volume.state.region)}) and droplet ${droplet.id} (${str(droplet.state.region)}) are in different regions`);
      const on = (volume.state.dropletIds as string[]) ?? [];
      // A volume attaches to one droplet at a time.
      if (on.length > 0 && !on.includes(droplet.id)) refuse(`422 volume ${volume.id} is already attached to droplet ${on[0]}`);
      volume.state.dropletIds = [droplet.id];
      droplet.state.volumeIds = [...new Set([...((droplet.state.volumeIds as string[]) ?? []), volume.id])];
      return { id: `${droplet.id}-${volume.id}-${nextSeq(cloud)}`, computed: {} };
    },
    delete(cloud, obj) {
      const volume = cloud.objects[str(obj.state.volumeId)];
      if (volume) volume.state.dropletIds = ((volume.state.dropletIds as string[]) ?? []).filter((d) => d !== String(obj.state.dropletId));
      const droplet = cloud.objects[String(obj.state.dropletId)];
      if (droplet) droplet.state.volumeIds = ((droplet.state.volumeIds as string[]) ?? []).filter((v) => v !== obj.state.volumeId);
    },
  },
  [VPC]: {
    create({ cloud, p }) {
      if (!REGIONS.includes(str(p.region))) refuse(`422 region "${str(p.region)}" is not available`);
      // VPC names are unique in an account (DO API: "name ... must be unique").
      uniqueName(cloud, VPC, str(p.name), () => true, "409 a VPC");
      const id = uuid(cloud, "vpc");
      return { id, computed: { urn: `do:vpc:${id}`, default: false, createdAt: cloud.clock } };
    },
    update: (_ctx, old) => pick(old.state, ["urn", "default", "createdAt"]),
    delete(cloud, obj) {
      const members = live(cloud, DROPLET).filter((d) => d.state.vpcUuid === obj.id);
      if (members.length > 0) refuse(`409 vpc ${obj.id} still has droplets: ${members.map((d) => d.id).join(", ")}`);
    },
  },
  "digitalocean:index/tag:Tag": {
    create: ({ p }) => ({ id: str(p.name), computed: {} }),
  },
  "digitalocean:index/firewall:Firewall": {
    create: ({ cloud }) => ({ id: uuid(cloud, "firewall"), computed: { status: "succeeded", createdAt: cloud.clock, pendingChanges: [], dropletIds: [] } }),
    update: (_ctx, old) => pick(old.state, ["status", "createdAt", "pendingChanges", "dropletIds"]),
  },
  [RESERVED_IP]: {
    create({ cloud }) {
      const ip = publicIpv4(cloud);
      return { id: ip, computed: { ipAddress: ip, urn: `do:reservedip:${ip}` } };
    },
  },
  "digitalocean:index/reservedIpAssignment:ReservedIpAssignment": {
    create({ cloud, p }) {
      const ip = cloud.objects[str(p.ipAddress)] ?? refuse(`404 reserved IP ${str(p.ipAddress)} not found`);
      if (!cloud.objects[String(p.dropletId)]) refuse(`404 droplet ${String(p.dropletId)} not found`);
      // Assigning moves the address from whatever droplet had it.
      ip.state.dropletId = String(p.dropletId);
      return { id: `${str(p.ipAddress)}-${String(p.dropletId)}`, computed: {} };
    },
    delete(cloud, obj) {
      // The provider's delete unassigns the address, wherever it is now (terraform-provider-digitalocean
      // resource_reserved_ip_assignment.go: Unassign).
      const ip = cloud.objects[str(obj.state.ipAddress)];
      if (ip) delete ip.state.dropletId;
    },
  },
  "digitalocean:index/spacesBucket:SpacesBucket": {
    create({ cloud, p }) {
      // S3 bucket names are global (BucketAlreadyExists).
      uniqueName(cloud, "digitalocean:index/spacesBucket:SpacesBucket", str(p.name), () => true, "409 BucketAlreadyExists: a bucket");
      const name = str(p.name);
      return { id: name, computed: { urn: `do:space:${name}`, bucketDomainName: `${name}.${str(p.region)}.digitaloceanspaces.com`, endpoint: `${str(p.region)}.digitaloceanspaces.com` } };
    },
    update: (_ctx, old) => pick(old.state, ["urn", "bucketDomainName", "endpoint"]),
  },
  "digitalocean:index/spacesKey:SpacesKey": {
    create({ cloud }) {
      const access = `DO00${hex(`spaces-${nextSeq(cloud)}`, 16).toUpperCase()}`;
      return { id: access, computed: { accessKey: access, secretKey: secret(randomBytes(32).toString("base64url")), createdAt: cloud.clock } };
    },
    update: (_ctx, old) => ({ ...pick(old.state, ["accessKey", "createdAt"]), secretKey: secret(old.state.secretKey) }),
  },
  "cloudflare:index/dnsRecord:DnsRecord": {
    create({ cloud, p }) {
      // Cloudflare refuses an identical record (error 81058) and a CNAME beside any record of its name (81053).
      for (const r of live(cloud, "cloudflare:index/dnsRecord:DnsRecord")) {
        if (r.state.zoneId !== p.zoneId || r.state.name !== p.name) continue;
        if (r.state.type === p.type && JSON.stringify(r.state.content ?? r.state.data) === JSON.stringify(p.content ?? p.data)) refuse(`400 (81058) an identical record already exists (${r.id})`);
        if (r.state.type === "CNAME" || p.type === "CNAME") refuse(`400 (81053) a CNAME cannot share the name ${str(p.name)} with another record (${r.id})`);
      }
      return { id: hex(`dns-${nextSeq(cloud)}`, 32), computed: { createdOn: cloud.clock, modifiedOn: cloud.clock, proxiable: true } };
    },
    update: ({ cloud }, old) => ({ ...pick(old.state, ["createdOn", "proxiable"]), modifiedOn: cloud.clock }),
  },
  "cloudflare:index/workersScript:WorkersScript": {
    create: ({ cloud, p }) => ({ id: str(p.scriptName), computed: { createdOn: cloud.clock, modifiedOn: cloud.clock } }),
    update: ({ cloud }, old) => ({ createdOn: old.state.createdOn, modifiedOn: cloud.clock }),
  },
  "cloudflare:index/workersRoute:WorkersRoute": {
    create: ({ cloud }) => ({ id: hex(`route-${nextSeq(cloud)}`, 32), computed: {} }),
  },
  "tailscale:index/acl:Acl": {
    create({ cloud }) {
      if (live(cloud, "tailscale:index/acl:Acl").length > 0) refuse("a tailnet has one policy file: another tailscale.Acl already owns it");
      return { id: "acl", computed: {} };
    },
  },
  [TAILNET_KEY]: {
    create({ cloud, p }) {
      const expiry = Number(p.expiry ?? 7_776_000);
      const n = nextSeq(cloud);
      return {
        id: `k${hex(`keyid-${n}`, 12)}`,
        computed: {
          key: secret(`tskey-auth-k${hex(`keyid-${n}`, 12)}-${randomBytes(16).toString("hex")}`),
          createdAt: cloud.clock,
          expiresAt: new Date(Date.parse(cloud.clock) + expiry * 1000).toISOString(),
          invalid: false,
          userId: "",
        },
      };
    },
    read(cloud, obj) {
      // The provider marks a key invalid only on refresh, and with recreateIfInvalid "always" drops it
      // from state so the next up creates a new one (terraform-provider-tailscale resource_tailnet_key.go).
      const invalid = Date.parse(cloud.clock) >= Date.parse(str(obj.state.expiresAt)) || (obj.state.reusable !== true && obj.state.used === true);
      if (invalid && obj.state.recreateIfInvalid === "always") return undefined;
      return { ...obj, state: { ...obj.state, invalid } };
    },
  },
  "tailscale:index/tailnetSettings:TailnetSettings": {
    create: () => ({ id: "settings", computed: {} }),
  },
  "random:index/randomBytes:RandomBytes": {
    create({ p }) {
      const b = randomBytes(Number(p.length));
      return { id: b.toString("base64"), computed: { base64: secret(b.toString("base64")), hex: secret(b.toString("hex")) } };
    },
  },
  "random:index/randomId:RandomId": {
    create({ p }) {
      const b = randomBytes(Number(p.byteLength));
      return { id: b.toString("base64url"), computed: { hex: b.toString("hex"), b64Std: b.toString("base64"), b64Url: b.toString("base64url"), dec: BigInt(`0x${b.toString("hex")}`).toString() } };
    },
  },
  "random:index/randomPassword:RandomPassword": {
    create({ p }) {
      const alphabet = `ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789${p.special === false ? "" : str(p.overrideSpecial) || "!@#$%&*()-_=+[]{}<>:?"}`;
      const result = [...randomBytes(Number(p.length))].map((b) => alphabet[b % alphabet.length]).join("");
      return { id: "none", computed: { result: secret(result), bcryptHash: secret(`$2a$10$${randomBytes(40).toString("base64url").slice(0, 53)}`) } };
    },
  },
  "docker:index/network:Network": {
    create({ cloud, p }) {
      uniqueName(cloud, "docker:index/network:Network", str(p.name), () => true, "409 (docker) network");
      return { id: hex(`net-${nextSeq(cloud)}`, 25), computed: { scope: p.driver === "overlay" ? "swarm" : "local" } };
    },
    delete(cloud, obj) {
      const users = inUseBy(cloud, obj.id);
      if (users.length > 0) refuse(`(docker) network ${str(obj.state.name)} is in use by service ${users.join(", ")}`);
    },
  },
  "docker:index/secret:Secret": {
    create({ cloud, p }) {
      uniqueName(cloud, "docker:index/secret:Secret", str(p.name), () => true, "(docker) rpc error: code = AlreadyExists desc = secret");
      return { id: hex(`secret-${nextSeq(cloud)}`, 25), computed: {} };
    },
    delete(cloud, obj) {
      const users = inUseBy(cloud, obj.id);
      if (users.length > 0) refuse(`(docker) rpc error: code = InvalidArgument desc = secret '${str(obj.state.name)}' is in use by the following service: ${users.join(", ")}`);
    },
  },
  "docker:index/serviceConfig:ServiceConfig": {
    create({ cloud, p }) {
      uniqueName(cloud, "docker:index/serviceConfig:ServiceConfig", str(p.name), () => true, "(docker) rpc error: code = AlreadyExists desc = config");
      return { id: hex(`config-${nextSeq(cloud)}`, 25), computed: {} };
    },
    delete(cloud, obj) {
      const users = inUseBy(cloud, obj.id);
      if (users.length > 0) refuse(`(docker) rpc error: code = InvalidArgument desc = config '${str(obj.state.name)}' is in use by the following service: ${users.join(", ")}`);
    },
  },
  "docker:index/volume:Volume": {
    // `docker volume create` of an existing name returns that volume: no uniqueness error.
    create: ({ cloud, p }) => ({ id: str(p.name) || hex(`vol-${nextSeq(cloud)}`, 25), computed: { mountpoint: `/var/lib/docker/volumes/${str(p.name)}/_data` } }),
  },
  [DOCKER_SERVICE]: {
    create({ cloud, p }) {
      uniqueName(cloud, DOCKER_SERVICE, str(p.name), () => true, "(docker) rpc error: code = AlreadyExists desc = service");
      checkReferences(cloud, p);
      return { id: hex(`service-${nextSeq(cloud)}`, 25), computed: {} };
    },
    update({ cloud, p }) {
      checkReferences(cloud, p);
      return {};
    },
  },
};

const PREDEFINED_NETWORKS = ["host", "bridge", "none", "ingress"];

/** A service spec naming a secret, config or network that does not exist is refused by the manager. */
function checkReferences(cloud: CloudState, p: Props): void {
  const task = (p.taskSpec ?? {}) as Props;
  const spec = (task.containerSpec ?? {}) as Props;
  for (const s of (spec.secrets as Props[] | undefined) ?? []) if (!cloud.objects[str(s.secretId)]) refuse(`(docker) secret ${str(s.secretId)} not found`);
  for (const c of (spec.configs as Props[] | undefined) ?? []) if (!cloud.objects[str(c.configId)]) refuse(`(docker) config ${str(c.configId)} not found`);
  for (const n of (task.networksAdvanceds as Props[] | undefined) ?? []) {
    const ref = str(n.id ?? n.name);
    // Every engine has the predefined networks; the program's own are known by id or name.
    if (PREDEFINED_NETWORKS.includes(ref)) continue;
    if (!cloud.objects[ref] && !live(cloud, "docker:index/network:Network").some((o) => o.state.name === ref)) refuse(`(docker) network ${ref} not found`);
  }
}

function pick(state: Props, keys: string[]): Props {
  return Object.fromEntries(keys.filter((k) => k in state).map((k) => [k, state[k]]));
}

export function behaviorOf(type: string): Behavior {
  return BEHAVIORS[type] ?? { create: ({ cloud }) => ({ id: hex(`${type}-${nextSeq(cloud)}`, 16), computed: {} }), update: same };
}

export { plain };
