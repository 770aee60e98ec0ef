/**
 * A simulated resource provider plugin, served with the SDK's own provider support
 * (@pulumi/pulumi/provider `main`): `pulumi-resource-<package>` runs this file with the package name.
 * It decides update versus replace from the upstream ForceNew table (schema.ts), keeps resources
 * in the simulated cloud (cloud.ts), and refuses what the real API refuses (resources.ts).
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import * as provider from "@pulumi/pulumi/provider";
import { journal, withCloud, readCloud, type SimObject } from "./cloud";
import { behaviorOf, sizesInvoke } from "./resources";
import { schemaOf } from "./schema";
import { withRealMode } from "./real";
import { changed, containsUnknown, plain, UNKNOWN, type Props } from "./values";

export const PACKAGES = ["digitalocean", "cloudflare", "tailscale", "docker", "random", "command"] as const;
export type PackageName = (typeof PACKAGES)[number];

/**
 * Types whose `name` the bridge auto-names (pulumi-digitalocean and pulumi-docker resources.go give
 * every resource with a `name` input an AutoName). When such a name is set explicitly, a replacement
 * deletes before it creates (pulumi-terraform-bridge pkg/tfbridge nameRequiresDeleteBeforeReplace).
 */
const AUTONAMED = new Set([
  "digitalocean:index/droplet:Droplet",
  "digitalocean:index/volume:Volume",
  "digitalocean:index/vpc:Vpc",
  "digitalocean:index/firewall:Firewall",
  "digitalocean:index/spacesBucket:SpacesBucket",
  "digitalocean:index/spacesKey:SpacesKey",
  "docker:index/network:Network",
  "docker:index/secret:Secret",
  "docker:index/serviceConfig:ServiceConfig",
  "docker:index/service:Service",
  "docker:index/volume:Volume",
]);

export function typeOfUrn(urn: string): string {
  const qualified = urn.split("::")[2]!;
  return qualified.split("$").pop()!;
}

/** The version the program's SDK package asks for, so the engine sees the plugin it expects. */
function sdkVersion(pkg: PackageName): string {
  const file = path.join(__dirname, "..", "..", "..", "node_modules", "@pulumi", pkg, "package.json");
  return (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version;
}

export interface DiffDecision {
  changes: boolean;
  changedKeys: string[];
  replaces: string[];
  deleteBeforeReplace: boolean;
}

/** The bridge's decision for old state vs new inputs: what changed, and which of those force a new resource. */
export function decide(type: string, olds: Props, news: Props): DiffDecision {
  const s = schemaOf(type);
  const computed = new Set(s.computed);
  const keys = new Set([...Object.keys(news), ...Object.keys(olds).filter((k) => !computed.has(k))]);
  const changedKeys = [...keys].filter((k) => !k.startsWith("__") && changed(olds[k], news[k])).sort();
  const forceNew = new Set(s.forceNew);
  const replaces = changedKeys.filter((k) => s.allForceNew || forceNew.has(k));
  const explicitName = typeof news.name === "string" && news.name !== "" && news.name !== UNKNOWN;
  return { changes: changedKeys.length > 0, changedKeys, replaces, deleteBeforeReplace: replaces.length > 0 && AUTONAMED.has(type) && explicitName };
}

function commandOf(urn: string, inputs: Props, op: "create" | "update" | "delete"): string | undefined {
  const p = plain(inputs) as Props;
  const cmd = op === "update" ? (p.update ?? p.create) : p[op];
  return typeof cmd === "string" ? cmd : undefined;
}

/** What a script declaring `# hm-prints: key...` prints: node ids are per node address, stable across re-runs. */
function printed(cloudNodeIds: Record<string, string>, inputs: Props): string {
  const p = plain(inputs) as Props;
  const script = [p.stdin, p.create].find((v): v is string => typeof v === "string" && /^# hm-prints: /m.test(v));
  if (!script) return "";
  const keys = /^# hm-prints: (.+)$/m.exec(script)![1]!.trim().split(/\s+/);
  // The node the script runs on: the last root@ADDRESS of the command (a join first reads the token from the manager).
  const targets = [...String(p.create ?? "").matchAll(/root@([A-Za-z0-9.:-]+)/g)].map((m) => m[1]!);
  const node = targets[targets.length - 1] ?? "localhost";
  return keys
    .map((k) => {
      if (k === "node-id") {
        cloudNodeIds[node] ??= createHash("sha256").update(`node-${node}-${Object.keys(cloudNodeIds).length}`).digest("hex").slice(0, 25);
        return `node-id=${cloudNodeIds[node]}\n`;
      }
      return `${k}=0\n`;
    })
    .join("");
}

export function makeProvider(pkg: PackageName): provider.Provider {
  return {
    version: sdkVersion(pkg),

    async check(_urn: string, _olds: Props, news: Props) {
      return { inputs: news };
    },

    async diff(_id: string, urn: string, olds: Props, news: Props) {
      const d = decide(typeOfUrn(urn), olds, news);
      return { changes: d.changes, replaces: d.replaces, deleteBeforeReplace: d.deleteBeforeReplace };
    },

    async create(urn: string, inputs: Props) {
      const type = typeOfUrn(urn);
      schemaOf(type);
      if (containsUnknown(inputs)) throw new Error(`${urn}: create with unknown inputs`);
      return withCloud((cloud) => {
        const p = plain(inputs) as Props;
        let computed: Props;
        let id: string;
        if (type === "command:local:Command") {
          id = `cmd-${cloud.seq + 1}`;
          cloud.seq += 1;
          const command = commandOf(urn, inputs, "create");
          if (command !== undefined) cloud.commands.push({ urn, op: "create", command, stdinSha256: sha(p.stdin), at: cloud.clock });
          computed = { stdout: printed(cloud.swarmNodeIds, inputs), stderr: "" };
        } else {
          ({ id, computed } = behaviorOf(type).create({ cloud, type, urn, inputs, p }));
        }
        cloud.objects[id] = { type, id, urn, state: plain({ ...inputs, ...computed }) as Props, createdAt: cloud.clock };
        journal(cloud, "create", type, urn, id);
        return { id, outs: { ...inputs, ...computed } };
      });
    },

    async update(id: string, urn: string, olds: Props, news: Props) {
      const type = typeOfUrn(urn);
      if (containsUnknown(news)) throw new Error(`${urn}: update with unknown inputs`);
      return withCloud((cloud) => {
        const old = cloud.objects[id];
        if (!old) throw new Error(`404 ${type} ${id} not found (deleted outside Pulumi?)`);
        const p = plain(news) as Props;
        let computed: Props;
        if (type === "command:local:Command") {
          const command = commandOf(urn, news, "update");
          if (command !== undefined) cloud.commands.push({ urn, op: "update", command, stdinSha256: sha(p.stdin), at: cloud.clock });
          computed = { stdout: printed(cloud.swarmNodeIds, news), stderr: "" };
        } else {
          const b = behaviorOf(type);
          // Random values and other outputs with no Update keep what was generated once.
          computed = b.update ? b.update({ cloud, type, urn, inputs: news, p }, old) : keepComputed(type, olds);
        }
        cloud.objects[id] = { ...old, state: plain({ ...news, ...computed }) as Props };
        journal(cloud, "update", type, urn, id);
        return { outs: { ...news, ...computed } };
      });
    },

    async delete(id: string, urn: string, props: Props) {
      const type = typeOfUrn(urn);
      withCloud((cloud) => {
        const obj = cloud.objects[id];
        if (type === "command:local:Command") {
          const command = commandOf(urn, props, "delete");
          if (command !== undefined) cloud.commands.push({ urn, op: "delete", command, at: cloud.clock });
        } else if (obj) {
          behaviorOf(type).delete?.(cloud, obj);
        }
        delete cloud.objects[id];
        journal(cloud, "delete", type, urn, id);
      });
    },

    async read(id: string, urn: string, props: Props) {
      const type = typeOfUrn(urn);
      const cloud = readCloud();
      const obj: SimObject | undefined = cloud.objects[id];
      const b = behaviorOf(type);
      const now = obj && b.read ? b.read(cloud, obj) : obj;
      if (!now) return { id: "", props: {} };
      if (now !== obj) withCloud((c) => void (c.objects[id] = now));
      return { id, props: { ...props, ...pickComputed(type, now.state) } };
    },

    async invoke(token: string, inputs: Props) {
      switch (token) {
        case "digitalocean:index/getSizes:getSizes":
          return { outputs: sizesInvoke() };
        case "tailscale:index/getDevices:getDevices": {
          const prefix = typeof inputs.namePrefix === "string" ? inputs.namePrefix : "";
          const devices = readCloud()
            .devices.filter((d) => d.hostname.startsWith(prefix))
            .map((d) => ({
              addresses: d.addresses,
              authorized: true,
              blocksIncomingConnections: false,
              clientVersion: "1.102.5",
              created: d.created,
              expires: "0001-01-01T00:00:00Z",
              hostname: d.hostname,
              id: d.nodeId,
              isExternal: false,
              keyExpiryDisabled: true,
              lastSeen: d.created,
              machineKey: "",
              name: `${d.hostname}.tail0000.ts.net`,
              nodeId: d.nodeId,
              nodeKey: "",
              os: "linux",
              tags: d.tags,
              updateAvailable: false,
              user: "tagged-devices",
            }));
          return { outputs: { id: "devices", devices } };
        }
        default:
          throw new Error(`the simulated ${pkg} provider has no function ${token}`);
      }
    },
  };
}

function keepComputed(type: string, olds: Props): Props {
  return Object.fromEntries(schemaOf(type).computed.filter((k) => k in olds).map((k) => [k, olds[k]]));
}
function pickComputed(type: string, state: Props): Props {
  return Object.fromEntries(schemaOf(type).computed.filter((k) => k in state && k !== "key" && k !== "secretKey" && k !== "result" && k !== "base64" && k !== "hex").map((k) => [k, state[k]]));
}
function sha(v: unknown): string | undefined {
  return typeof v === "string" ? createHash("sha256").update(v).digest("hex") : undefined;
}

if (require.main === module) {
  const pkg = process.argv[2] as PackageName;
  if (!PACKAGES.includes(pkg)) {
    console.error(`usage: provider.ts <${PACKAGES.join("|")}> [engine address]`);
    process.exit(2);
  }
  // Real mode (HM_REAL_DOCKER_HOST): docker resources and commands applied to a private engine (sim/real/).
  void provider.main(withRealMode(makeProvider(pkg)), process.argv.slice(3));
}
