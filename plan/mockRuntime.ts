import { createHash } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import { DROPLET_SIZES } from "../components/settings";
import type { StackConfig } from "./stackConfig";

/**
 * Runs the real program under Pulumi's mock runtime and records every registration the way the
 * engine would see it: inputs (with secrets marked), options, and computed outputs.
 * One program run per process: the Pulumi runtime is global state.
 */

export const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";
const SIG_KEY = "4dabf18193072939515e22adb298388d";

export interface RecordedResource {
  urn: string;
  id: string | null;
  type: string;
  name: string;
  parent: string;
  custom: boolean;
  provider: string;
  /** Inputs as registered; secret leaves are wrapped as {secret: value}. */
  inputs: unknown;
  options: {
    protect: boolean;
    retainOnDelete: boolean;
    ignoreChanges: string[];
    deleteBeforeReplace: boolean;
    replaceOnChanges: string[];
    /** Outputs kept secret whatever the input (a policy sees this, not the inputs' secretness). */
    additionalSecretOutputs: string[];
    /** Every resource the SDK tells the engine this one waits for: explicit dependsOn and the resources behind its input values. */
    dependsOn: string[];
    /** Earlier identities (alias URNs or specs): a renamed resource that keeps its state. */
    aliases: string[];
    /** Resources whose replacement replaces this one. */
    replaceWith: string[];
    /** Per input: the resources its value came from (what the engine diffs as unknown when they are replaced). */
    propertyDependencies: Record<string, string[]>;
  };
}

export interface ProgramRun {
  resources: RecordedResource[];
  /** Stack outputs; secret leaves wrapped as {secret: value}. */
  outputs: Record<string, unknown>;
  error?: unknown;
}

/** A wrapped secret leaf in recorded values. */
export interface SecretLeaf {
  secret: unknown;
}
export function isSecretLeaf(v: unknown): v is SecretLeaf {
  return typeof v === "object" && v !== null && Object.keys(v).length === 1 && "secret" in v;
}

/** Turns the SDK's secret signature objects into {secret: value} leaves, recursively. */
export function markSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(markSecrets);
  if (value !== null && typeof value === "object") {
    const obj = value as Record<string, unknown>;
    if (obj[SIG_KEY] === SECRET_SIG) return { secret: markSecrets(obj.value) };
    if (SIG_KEY in obj) return `[${String(obj[SIG_KEY])}]`;
    return Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, markSecrets(v)]));
  }
  return value;
}

function digest(...parts: string[]): Buffer {
  return createHash("sha256").update(parts.join("\u0000")).digest();
}

/** Deterministic bytes of any length, derived from a seed. */
export function mockBytes(seed: string, length: number): Buffer {
  const chunks: Buffer[] = [];
  for (let i = 0; chunks.length * 32 < length; i++) chunks.push(digest(seed, String(i)));
  return Buffer.concat(chunks).subarray(0, length);
}

function mockString(seed: string, length: number, special: boolean): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" + (special ? "!#%*-_=+" : "");
  return [...mockBytes(seed, length)].map((b) => alphabet[b % alphabet.length]).join("");
}

function secret(value: unknown): Record<string, unknown> {
  return { [SIG_KEY]: SECRET_SIG, value };
}

/** A deterministic address in a documentation range, so a plan can never point at a real host. */
export function mockIpv4(seed: string, prefix = "203.0.113"): string {
  return `${prefix}.${(digest(seed)[0]! % 200) + 10}`;
}

type State = Record<string, unknown>;

/**
 * What a script that declares `# hm-prints: key...` would print: one `key=value` line per key,
 * deterministic. No script prints a secret (a command's output may reach deploy logs).
 */
function mockPrinted(seed: string, inputs: State): string {
  const plain = (v: unknown): unknown => (v !== null && typeof v === "object" && (v as State)[SIG_KEY] === SECRET_SIG ? (v as State).value : v);
  const script = [plain(inputs.stdin), plain(inputs.create)].find((v): v is string => typeof v === "string" && /^# hm-prints: /m.test(v));
  if (!script) return "";
  const keys = /^# hm-prints: (.+)$/m.exec(script)![1]!.trim().split(/\s+/);
  return keys
    .map((k) => {
      const hex = digest(seed, k).toString("hex");
      return `${k}=mock${hex.slice(0, 25)}\n`;
    })
    .join("");
}

/** Computed outputs per resource type: what the provider would add to the inputs. */
function computedOutputs(type: string, name: string, inputs: State): State {
  const seed = `${type}::${name}`;
  switch (type) {
    case "random:index/randomPassword:RandomPassword": {
      const result = mockString(seed, Number(inputs.length ?? 32), inputs.special !== false);
      return { result: secret(result), bcryptHash: secret(`$2a$10$${mockString(seed + "bcrypt", 53, false)}`) };
    }
    case "random:index/randomString:RandomString":
      return { result: mockString(seed, Number(inputs.length ?? 32), inputs.special !== false) };
    case "random:index/randomBytes:RandomBytes": {
      const bytes = mockBytes(seed, Number(inputs.length ?? 32));
      return { base64: secret(bytes.toString("base64")), hex: secret(bytes.toString("hex")) };
    }
    case "random:index/randomId:RandomId": {
      const bytes = mockBytes(seed, Number(inputs.byteLength ?? 8));
      return { hex: bytes.toString("hex"), b64Std: bytes.toString("base64"), b64Url: bytes.toString("base64url"), dec: BigInt(`0x${bytes.toString("hex")}`).toString() };
    }
    case "command:local:Command":
    case "command:remote:Command":
      return { stdout: mockPrinted(seed, inputs), stderr: "" };
    case "digitalocean:index/droplet:Droplet":
      return {
        ipv4Address: mockIpv4(seed),
        ipv4AddressPrivate: mockIpv4(seed, "10.110.0"),
        ipv6Address: `2001:db8::${digest(seed).readUInt16BE(0).toString(16)}`,
        urn: `do:droplet:${digest(seed).readUInt32BE(0)}`,
        status: "active",
        createdAt: MOCK_DROPLET_CREATED_AT,
      };
    case "digitalocean:index/reservedIp:ReservedIp":
      return { ipAddress: mockIpv4(seed), urn: `do:reservedip:${mockIpv4(seed)}` };
    case "digitalocean:index/volume:Volume":
      return { urn: `do:volume:${digest(seed).toString("hex").slice(0, 8)}` };
    case "digitalocean:index/vpc:Vpc":
      return { urn: `do:vpc:${digest(seed).toString("hex").slice(0, 8)}` };
    case "tailscale:index/tailnetKey:TailnetKey":
      return { key: secret(`tskey-auth-mock${mockString(seed, 24, false)}`) };
    case "digitalocean:index/spacesBucket:SpacesBucket":
      return { bucketDomainName: `${inputs.name}.${inputs.region}.digitaloceanspaces.com`, endpoint: `${inputs.region}.digitaloceanspaces.com`, urn: `do:space:${inputs.name}` };
    case "digitalocean:index/spacesKey:SpacesKey":
      return { accessKey: `DO00${mockString(seed, 16, false).toUpperCase()}`, secretKey: secret(mockString(seed + "secret", 43, false)) };
    case "docker:index/service:Service":
    case "docker:index/network:Network":
    case "docker:index/volume:Volume":
      return { name: inputs.name ?? name };
    // Headscale's dynamic resources (components/platform/headscale*.ts): what their create returns.
    case "pulumi-nodejs:dynamic/headscale:SealingKey":
      return { publicKeyPem: MOCK_PUBLIC_KEY_PEM, privateKeyPem: secret(`-----BEGIN PRIVATE KEY-----\nmock${mockString(seed, 40, false)}\n-----END PRIVATE KEY-----\n`) };
    case "pulumi-nodejs:dynamic/headscale:ApiKeyHandover":
      return { apiKey: secret(`hskey-api-${mockString(seed, 12, false)}-${mockString(seed + "s", 64, false)}`) };
    case "pulumi-nodejs:dynamic/headscale:NodeAddress":
      return { ipv4: mockIpv4(seed, "100.64.0") };
    case "pulumi-nodejs:dynamic/headscale:PreAuthKey":
      return { key: secret(`hskey-auth-${mockString(seed, 12, false)}-${mockString(seed + "s", 64, false)}`), expiration: "2026-01-01T13:00:00Z", expired: false };
    default:
      return {};
  }
}

/** A well-formed RSA public key PEM for planning (a real key's shape; its private half exists nowhere). */
const MOCK_PUBLIC_KEY_PEM = `-----BEGIN PUBLIC KEY-----\n${mockBytes("hm-mock-sealing-key", 294).toString("base64").replace(/(.{64})/g, "$1\n")}\n-----END PUBLIC KEY-----\n`;

/** When every mock droplet was created. */
export const MOCK_DROPLET_CREATED_AT = "2026-01-01T12:00:00Z";

/**
 * A mock tailnet device. Every mock droplet has two: `stale`, left behind by an earlier droplet of
 * the same hostname (a replaced node), listed first; and `current`, joined after the droplet was created.
 */
export function mockTailnetDevice(hostname: string, incarnation: "stale" | "current", tag: string): State {
  const b = digest(hostname, incarnation);
  return {
    id: `device-${incarnation}-${hostname}`,
    nodeId: `n${b.toString("hex").slice(0, 12)}`,
    hostname,
    name: `${hostname}${incarnation === "current" ? "-1" : ""}.tailnet.ts.net`,
    addresses: [`100.${64 + (b[0]! % 64)}.${b[1]}.${b[2]}`, `fd7a:115c:a1e0::${b.readUInt16BE(3).toString(16)}`],
    tags: [tag],
    created: incarnation === "current" ? "2026-01-01T12:01:30Z" : "2025-06-01T08:00:00Z",
    authorized: true,
  };
}

/** Results of provider functions (invokes), deterministic. */
function invokeResult(token: string, inputs: State, tailnetNodes: ReadonlyMap<string, string>): State {
  switch (token) {
    case "digitalocean:index/getSizes:getSizes":
      // The price table of the program stands in for DigitalOcean's live list.
      return {
        id: "sizes",
        sizes: Object.entries(DROPLET_SIZES).map(([slug, s]) => ({ slug, memory: s.memoryMb, priceMonthly: s.priceMonthly, priceHourly: s.priceMonthly / 672, available: true, regions: [] })),
      };
    case "tailscale:index/getDevices:getDevices": {
      const devices = [...tailnetNodes].flatMap(([host, tag]) => [mockTailnetDevice(host, "stale", tag), mockTailnetDevice(host, "current", tag)]);
      return { ...inputs, id: "devices", devices };
    }
    default:
      return inputs;
  }
}

// Types whose real ids are numbers (other resources take them as numbers).
const NUMERIC_ID_TYPES = new Set(["digitalocean:index/droplet:Droplet"]);

export function mockId(type: string, name: string): string {
  if (NUMERIC_ID_TYPES.has(type)) return String(digest(type, name).readUInt32BE(0));
  return `mock-${digest(type, name).toString("hex").slice(0, 16)}`;
}

interface RegisterRequest {
  getType(): string;
  getName(): string;
  getParent(): string;
  getCustom(): boolean;
  getProvider(): string;
  getProtect(): boolean;
  getRetainondelete(): boolean;
  getIgnorechangesList(): string[];
  getDeletebeforereplace(): boolean;
  getReplaceonchangesList(): string[];
  getAdditionalsecretoutputsList(): string[];
  getDependenciesList(): string[];
  getAliasurnsList(): string[];
  getAliasesList(): Array<{ toObject(): unknown }>;
  getReplaceWithList(): string[];
  getPropertydependenciesMap(): { entries(): IterableIterator<[string, { getUrnsList(): string[] }]> };
  getObject(): { toJavaScript(): unknown } | undefined;
}

interface MonitorWithRegister {
  registerResource(req: RegisterRequest, callback: (err: unknown, resp?: { getUrn(): string; getId(): string }) => void): Promise<void>;
  registerResourceOutputs(req: { getUrn(): string; getOutputs(): { toJavaScript(): unknown } | undefined }, callback: (err: unknown, resp?: unknown) => void): void;
}

/**
 * Sets up the mock runtime for `stack` with `config`, runs `program` inside a Stack resource, and
 * returns what it registered. Never throws for program errors: they come back in `error`.
 */
export async function runUnderMocks(stack: string, config: StackConfig, program: () => Promise<Record<string, unknown> | void>): Promise<ProgramRun> {
  const records = new Map<string, RecordedResource>();
  const order: string[] = [];
  const errors: unknown[] = [];
  let stackOutputs: Record<string, unknown> = {};
  // Droplets by name, with the tailnet tag their user data joins with: they become tailnet devices.
  const tailnetNodes = new Map<string, string>();

  pulumi.runtime.setAllConfig(config.values, config.secretKeys);
  await pulumi.runtime.setMocks(
    {
      newResource(args: pulumi.runtime.MockResourceArgs): { id: string | undefined; state: State } {
        const inputs = args.inputs as State;
        const id = args.custom ? mockId(args.type, args.name) : undefined;
        if (args.type === "digitalocean:index/droplet:Droplet") {
          const userData = markSecrets(inputs.userData);
          const text = String(isSecretLeaf(userData) ? userData.secret : (userData ?? ""));
          const tag = /--advertise-tags[= ]+(tag:[A-Za-z0-9-]+)/.exec(text)?.[1] ?? "tag:none";
          tailnetNodes.set(String(inputs.name ?? args.name), tag);
        }
        return { id, state: { ...inputs, ...computedOutputs(args.type, args.name, inputs) } };
      },
      call(args: pulumi.runtime.MockCallArgs): State {
        return invokeResult(args.token, args.inputs as State, tailnetNodes);
      },
    },
    "hardened-matrix",
    stack,
    false,
  );

  const monitor = pulumi.runtime.getMonitor() as unknown as MonitorWithRegister;
  const register = monitor.registerResource.bind(monitor);
  // URNs as the engine forms them: the parent's whole qualified type, not only its last part as
  // the SDK's mock monitor forms them (pulumi/pulumi pkg/resource/deploy/step_generator.go
  // generateURN, resource.NewURN; the root stack's type is left out).
  const engineUrns = new Map<string, string>();
  const claimed = new Set<string>();
  const engineUrn = (req: RegisterRequest): string => {
    const parent = req.getParent() ? (engineUrns.get(req.getParent()) ?? req.getParent()) : "";
    const parentType = parent && req.getType() !== "pulumi:pulumi:Stack" && !parent.includes("::pulumi:pulumi:Stack::") ? `${parent.split("::")[2]}$` : "";
    return `urn:pulumi:${pulumi.getStack()}::${pulumi.getProject()}::${parentType}${req.getType()}::${req.getName()}`;
  };
  monitor.registerResource = (req, callback) => {
    // The engine refuses a second registration of one URN (step_generator.go generateURN; wording:
    // sdk/go/common/diag/errors.go GetDuplicateResourceURNError). The mock would keep the last one.
    const full = engineUrn(req);
    if (claimed.has(full)) {
      const duplicate = new Error(`Duplicate resource URN '${full}'; try giving it a unique name`);
      errors.push(duplicate);
      callback(duplicate);
      return Promise.resolve();
    }
    claimed.add(full);
    return register(req, (err, resp) => {
      if (!err && resp) {
        const urn = resp.getUrn();
        engineUrns.set(urn, full);
        const inputs = markSecrets(pulumi.runtime.deserializeProperties(req.getObject() as never));
        // Keyed by the engine's URN: two resources the mock would name alike both stay.
        records.set(full, {
          urn,
          id: resp.getId() || null,
          type: req.getType(),
          name: req.getName(),
          parent: req.getParent(),
          custom: req.getCustom(),
          provider: req.getProvider(),
          inputs,
          options: {
            protect: req.getProtect(),
            retainOnDelete: req.getRetainondelete() ?? false,
            ignoreChanges: req.getIgnorechangesList(),
            deleteBeforeReplace: req.getDeletebeforereplace(),
            replaceOnChanges: req.getReplaceonchangesList(),
            additionalSecretOutputs: req.getAdditionalsecretoutputsList(),
            dependsOn: [...req.getDependenciesList()].sort(),
            aliases: [...req.getAliasurnsList(), ...req.getAliasesList().map((a) => JSON.stringify(a.toObject()))],
            replaceWith: [...req.getReplaceWithList()].sort(),
            propertyDependencies: Object.fromEntries(
              [...req.getPropertydependenciesMap().entries()].map(([k, v]) => [k, [...v.getUrnsList()].sort()]),
            ),
          },
        });
        order.push(full);
      }
      callback(err, resp);
    });
  };
  const registerOutputs = monitor.registerResourceOutputs.bind(monitor);
  monitor.registerResourceOutputs = (req, callback) => {
    if (req.getUrn().includes("::pulumi:pulumi:Stack::")) {
      stackOutputs = markSecrets(pulumi.runtime.deserializeProperties(req.getOutputs() as never)) as Record<string, unknown>;
    }
    registerOutputs(req, callback);
  };

  // Errors inside applies surface as rejected registrations, not as a rejection of the program.
  const onRejection = (reason: unknown) => errors.push(reason);
  process.on("unhandledRejection", onRejection);
  try {
    await pulumi.runtime.runInPulumiStack(async () => {
      try {
        return (await program()) ?? {};
      } catch (e) {
        errors.push(e);
        return {};
      }
    });
  } catch (e) {
    errors.push(e);
  }
  try {
    await pulumi.runtime.disconnect();
  } catch (e) {
    errors.push(e);
  }
  await new Promise((resolve) => setImmediate(resolve));
  process.off("unhandledRejection", onRejection);
  const error = errors[0];
  return { resources: order.map((urn) => records.get(urn)!), outputs: stackOutputs, error };
}
