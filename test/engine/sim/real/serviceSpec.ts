/**
 * The docker provider's inputs (the SDK's input types, @pulumi/docker types/input.d.ts:
 * ServiceTaskSpec, ServiceTaskSpecContainerSpec, ...) mapped to the Docker Engine API's bodies as the
 * real provider maps them (kreuzwerker/terraform-provider-docker internal/provider/
 * resource_docker_service_structures.go createServiceSpec, createContainerSpec, createResources,
 * createRestartPolicy, createPlacement, createServiceAdvancedNetworks, createLogDriver,
 * createServiceMode, createUpdateOrRollbackConfig, createServiceEndpointSpec, createConvergeConfig;
 * resource_docker_network.go, resource_docker_secret.go, resource_docker_config.go,
 * resource_docker_volume.go).
 *
 * Strict: an input field that is set and not mapped here is refused, naming it; nothing is
 * silently dropped. Unset means what Terraform's GetOk treats as unset: absent, null, "", [] or {}.
 */
import type { Props } from "../values";

export class UnmappedField extends Error {}

const unset = (v: unknown): boolean =>
  v === undefined || v === null || v === "" || (Array.isArray(v) && v.length === 0) || (typeof v === "object" && v !== null && !Array.isArray(v) && Object.keys(v).length === 0);

/** Reads an input object field by field; `done()` refuses every set field nobody read. */
class Fields {
  private readonly used = new Set<string>();
  constructor(
    private readonly o: Props,
    readonly at: string,
  ) {}
  private raw(k: string): unknown {
    this.used.add(k);
    const v = this.o[k];
    return unset(v) ? undefined : v;
  }
  str(k: string): string | undefined {
    const v = this.raw(k);
    return v === undefined ? undefined : String(v);
  }
  num(k: string): number | undefined {
    const v = this.raw(k);
    return v === undefined ? undefined : Number(v);
  }
  bool(k: string): boolean | undefined {
    const v = this.raw(k);
    return v === undefined ? undefined : v === true;
  }
  strs(k: string): string[] | undefined {
    const v = this.raw(k) as unknown[] | undefined;
    return v?.map(String);
  }
  map(k: string): Record<string, string> | undefined {
    const v = this.raw(k) as Props | undefined;
    return v && Object.fromEntries(Object.entries(v).map(([a, b]) => [a, String(b)]));
  }
  obj(k: string): Fields | undefined {
    const v = this.raw(k) as Props | undefined;
    return v && new Fields(v, `${this.at}${this.at ? "." : ""}${k}`);
  }
  list(k: string): Fields[] {
    const v = (this.raw(k) as Props[] | undefined) ?? [];
    return v.map((x, i) => new Fields(x, `${this.at}${this.at ? "." : ""}${k}[${i}]`));
  }
  /** A `[{label, value}]` list as a map. */
  labels(k: string): Record<string, string> | undefined {
    const l = this.list(k);
    if (l.length === 0) return undefined;
    return Object.fromEntries(
      l.map((f) => {
        const e = [f.str("label") ?? "", f.str("value") ?? ""] as const;
        f.done();
        return e;
      }),
    );
  }
  done(): void {
    for (const [k, v] of Object.entries(this.o)) {
      if (k.startsWith("__") || this.used.has(k) || unset(v)) continue;
      throw new UnmappedField(
        `input ${this.at}${this.at ? "." : ""}${k} is set but the real-mode docker provider does not map it to the Engine API (test/engine/sim/real/serviceSpec.ts): refused rather than dropped`,
      );
    }
  }
}

/** Go's time.ParseDuration, to nanoseconds (the Engine API's durations). */
export function durationNs(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  const units: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let m: RegExpExecArray | null;
  let end = 0;
  if (s === "0") return 0;
  while ((m = re.exec(s))) {
    total += Number(m[1]) * units[m[2]!]!;
    end = re.lastIndex;
  }
  if (end !== s.length || end === 0) throw new Error(`invalid duration "${s}"`);
  return Math.round(total);
}

const defined = <T extends Record<string, unknown>>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

function containerSpec(c: Fields): Props {
  const mounts = c.list("mounts").map((m) => {
    const bind = m.obj("bindOptions");
    const vol = m.obj("volumeOptions");
    const tmpfs = m.obj("tmpfsOptions");
    const out = defined({
      Type: m.str("type"),
      Target: m.str("target"),
      Source: m.str("source"),
      ReadOnly: m.bool("readOnly"),
      BindOptions: bind && defined({ Propagation: bind.str("propagation") }),
      VolumeOptions:
        vol &&
        defined({
          NoCopy: vol.bool("noCopy"),
          Labels: vol.labels("labels"),
          DriverConfig: vol.str("driverName") !== undefined || vol.map("driverOptions") ? defined({ Name: vol.str("driverName"), Options: vol.map("driverOptions") }) : undefined,
        }),
      TmpfsOptions: tmpfs && defined({ SizeBytes: tmpfs.num("sizeBytes"), Mode: tmpfs.num("mode") }),
    });
    for (const f of [bind, vol, tmpfs, m]) f?.done();
    return out;
  });
  const hc = c.obj("healthcheck");
  const healthcheck =
    hc &&
    defined({
      Test: hc.strs("tests"),
      Interval: durationNs(hc.str("interval")),
      Timeout: durationNs(hc.str("timeout")),
      StartPeriod: durationNs(hc.str("startPeriod")),
      Retries: hc.num("retries"),
    });
  hc?.done();
  const dns = c.obj("dnsConfig");
  const dnsConfig = dns && defined({ Nameservers: dns.strs("nameservers"), Search: dns.strs("searches"), Options: dns.strs("options") });
  dns?.done();
  const hosts = c.list("hosts").map((h) => {
    // extraHostsSetToServiceExtraHosts: "ip host" lines, as /etc/hosts has them.
    const line = `${h.str("ip") ?? ""} ${h.str("host") ?? ""}`;
    h.done();
    return line;
  });
  // A secret and a config reference map alike: an ID, a name and the file it appears as (uid/gid "0", mode 0444 unless set).
  const fileRefs = (key: "secrets" | "configs", kind: "Secret" | "Config") =>
    c.list(key).map((s) => {
      const out = defined({
        [`${kind}ID`]: s.str(`${kind.toLowerCase()}Id`),
        [`${kind}Name`]: s.str(`${kind.toLowerCase()}Name`),
        File: { Name: s.str("fileName"), UID: s.str("fileUid") ?? "0", GID: s.str("fileGid") ?? "0", Mode: s.num("fileMode") ?? 0o444 },
      });
      s.done();
      return out;
    });
  const secrets = fileRefs("secrets", "Secret");
  const configs = fileRefs("configs", "Config");
  const env = c.map("env");
  const spec = defined({
    Image: c.str("image"),
    Labels: c.labels("labels"),
    Command: c.strs("commands"),
    Args: c.strs("args"),
    Hostname: c.str("hostname"),
    Env: env && Object.entries(env).map(([k, v]) => `${k}=${v}`),
    Dir: c.str("dir"),
    User: c.str("user"),
    Groups: c.strs("groups"),
    ReadOnly: c.bool("readOnly"),
    Mounts: mounts.length > 0 ? mounts : undefined,
    StopSignal: c.str("stopSignal"),
    StopGracePeriod: durationNs(c.str("stopGracePeriod")),
    Healthcheck: healthcheck,
    Hosts: hosts.length > 0 ? hosts : undefined,
    DNSConfig: dnsConfig,
    Secrets: secrets.length > 0 ? secrets : undefined,
    Configs: configs.length > 0 ? configs : undefined,
    Isolation: c.str("isolation"),
    Sysctls: c.map("sysctl"),
    CapabilityAdd: c.strs("capAdds"),
    CapabilityDrop: c.strs("capDrops"),
    Init: c.bool("init"),
  });
  // `privileges` (credential spec, SELinux context) is not mapped: done() refuses it when set.
  c.done();
  return spec;
}

function updateConfig(u: Fields | undefined): Props | undefined {
  if (!u) return undefined;
  const out = defined({
    Parallelism: u.num("parallelism"),
    Delay: durationNs(u.str("delay")),
    FailureAction: u.str("failureAction"),
    Monitor: durationNs(u.str("monitor")),
    MaxFailureRatio: u.str("maxFailureRatio") === undefined ? undefined : Number(u.str("maxFailureRatio")),
    Order: u.str("order"),
  });
  u.done();
  return out;
}

function taskSpec(t: Fields): Props {
  const c = t.obj("containerSpec");
  const res = t.obj("resources");
  let resources: Props | undefined;
  if (res) {
    const l = res.obj("limits");
    const r = res.obj("reservation");
    resources = defined({
      Limits: l && defined({ NanoCPUs: l.num("nanoCpus"), MemoryBytes: l.num("memoryBytes") }),
      // genericResources is not mapped: refused when set.
      Reservations: r && defined({ NanoCPUs: r.num("nanoCpus"), MemoryBytes: r.num("memoryBytes") }),
    });
    for (const f of [l, r, res]) f?.done();
  }
  const rp = t.obj("restartPolicy");
  const restartPolicy =
    rp &&
    defined({
      Condition: rp.str("condition"),
      Delay: durationNs(rp.str("delay")),
      MaxAttempts: rp.num("maxAttempts"),
      Window: durationNs(rp.str("window")),
    });
  rp?.done();
  const pl = t.obj("placement");
  const placement =
    pl &&
    defined({
      Constraints: pl.strs("constraints"),
      // stringSetToPlacementPrefs: each pref is a spread descriptor.
      Preferences: pl.strs("prefs")?.map((p) => ({ Spread: { SpreadDescriptor: p } })),
      MaxReplicas: pl.num("maxReplicas"),
    });
  pl?.done();
  const networks = t.list("networksAdvanceds").map((n) => {
    const target = n.str("id") ?? n.str("name");
    if (!target) throw new UnmappedField(`${n.at}: network 'name' or 'id' must be specified`);
    const driverOpts = n.strs("driverOpts");
    const out = defined({
      Target: target,
      Aliases: n.strs("aliases"),
      DriverOpts: driverOpts && Object.fromEntries(driverOpts.map((kv) => [kv.split("=")[0]!, kv.slice(kv.indexOf("=") + 1)])),
    });
    n.done();
    return out;
  });
  const ld = t.obj("logDriver");
  const logDriver = ld && defined({ Name: ld.str("name"), Options: ld.map("options") });
  ld?.done();
  const spec = defined({
    ContainerSpec: c ? containerSpec(c) : undefined,
    Resources: resources,
    RestartPolicy: restartPolicy,
    Placement: placement,
    ForceUpdate: t.num("forceUpdate"),
    Runtime: t.str("runtime"),
    Networks: networks.length > 0 ? networks : undefined,
    LogDriver: logDriver,
  });
  t.done();
  return spec;
}

export interface ConvergeConfig {
  delayMs: number;
  timeoutMs: number;
}

/** A docker.Service's inputs as the Engine API's ServiceSpec, and its convergeConfig. */
export function serviceSpec(p: Props): { spec: Props; converge?: ConvergeConfig } {
  const s = new Fields(p, "");
  const mode = s.obj("mode");
  let Mode: Props | undefined;
  if (mode) {
    const rep = mode.obj("replicated");
    if (mode.bool("global")) Mode = { Global: {} };
    else if (rep) Mode = { Replicated: defined({ Replicas: rep.num("replicas") }) };
    rep?.done();
    mode.done();
  }
  const ep = s.obj("endpointSpec");
  let EndpointSpec: Props | undefined;
  if (ep) {
    const ports = ep.list("ports").map((port) => {
      const out = defined({
        Name: port.str("name"),
        Protocol: port.str("protocol"),
        TargetPort: port.num("targetPort"),
        PublishedPort: port.num("publishedPort"),
        PublishMode: port.str("publishMode"),
      });
      port.done();
      return out;
    });
    EndpointSpec = defined({ Mode: ep.str("mode"), Ports: ports.length > 0 ? ports : undefined });
    ep.done();
  }
  // A kernel without IPVS (this machine's, FACTS.md) routes no service virtual IP: a test sets
  // HM_REAL_ENDPOINT_MODE=dnsrr to run the program's VIP services as DNS round-robin instead. A
  // named difference of the test machine, not of the program (droplet kernels have IPVS).
  const forcedMode = process.env.HM_REAL_ENDPOINT_MODE;
  if (forcedMode && !EndpointSpec?.Mode) EndpointSpec = { ...EndpointSpec, Mode: forcedMode };
  const cc = s.obj("convergeConfig");
  const converge = cc && { delayMs: (durationNs(cc.str("delay")) ?? 7e9) / 1e6, timeoutMs: (durationNs(cc.str("timeout")) ?? 180e9) / 1e6 };
  cc?.done();
  if (converge && Mode?.Global) throw new UnmappedField("convergeConfig is not supported with mode.global (terraform-provider-docker: converge_config conflicts with mode.0.global)");
  const t = s.obj("taskSpec");
  const spec = defined({
    Name: s.str("name"),
    Labels: s.labels("labels"),
    TaskTemplate: t ? taskSpec(t) : {},
    Mode,
    UpdateConfig: updateConfig(s.obj("updateConfig")),
    RollbackConfig: updateConfig(s.obj("rollbackConfig")),
    EndpointSpec,
  });
  // `auth` (registry credentials) is not mapped: refused when set.
  s.done();
  return { spec, converge };
}

/** docker.Network inputs as the body of POST /networks/create. */
export function networkBody(p: Props): Props {
  const s = new Fields(p, "");
  const ipamConfigs = s.list("ipamConfigs").map((c) => {
    const out = defined({ Subnet: c.str("subnet"), IPRange: c.str("ipRange"), Gateway: c.str("gateway"), AuxiliaryAddresses: c.map("auxAddress") });
    c.done();
    return out;
  });
  const ipamDriver = s.str("ipamDriver");
  const ipamOptions = s.map("ipamOptions");
  const body = defined({
    Name: s.str("name"),
    Driver: s.str("driver"),
    Internal: s.bool("internal"),
    Attachable: s.bool("attachable"),
    Ingress: s.bool("ingress"),
    EnableIPv6: s.bool("ipv6"),
    Options: s.map("options"),
    Labels: s.labels("labels"),
    IPAM: ipamDriver || ipamOptions || ipamConfigs.length > 0 ? defined({ Driver: ipamDriver ?? "default", Options: ipamOptions, Config: ipamConfigs }) : undefined,
  });
  s.done();
  return body;
}

/** docker.Secret / docker.ServiceConfig inputs as the body of POST /secrets/create or /configs/create. */
export function secretBody(p: Props, kind: "secret" | "config"): Props {
  const s = new Fields(p, "");
  let data = s.str("data");
  // The provider decodes `data` as standard base64 and sends the bytes (which the API carries as base64);
  // a config may give `dataRaw` instead (resource_docker_config.go getConfigDataBytes).
  const raw = kind === "config" ? s.str("dataRaw") : undefined;
  if (raw !== undefined) data = Buffer.from(raw, "utf8").toString("base64");
  if (data === undefined) throw new UnmappedField(`a ${kind} needs data`);
  const body = defined({ Name: s.str("name"), Labels: s.labels("labels"), Data: Buffer.from(data, "base64").toString("base64") });
  s.done();
  return body;
}

/** docker.Volume inputs as the body of POST /volumes/create (`cluster`, CSI volumes, is not mapped). */
export function volumeBody(p: Props): Props {
  const s = new Fields(p, "");
  const body = defined({ Name: s.str("name"), Driver: s.str("driver"), DriverOpts: s.map("driverOpts"), Labels: s.labels("labels") });
  s.done();
  return body;
}
