/**
 * Small programs run under the offline plan's mocks, one per process (the Pulumi runtime is global
 * state, and a refused registration surfaces as an unhandled rejection the test runner would take
 * for a failure of its own). Prints {error, resources}.
 * Run directly: node --import tsx test/support/mockScenario.ts NAME
 */
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { HeadscaleServer } from "../../components/platform/headscale";
import { runUnderMocks } from "../../plan/mockRuntime";

export interface ScenarioResult {
  error?: string;
  resources: Array<{ type: string; name: string; parent: string }>;
}

class Box extends pulumi.ComponentResource {
  constructor(type: string, name: string, opts?: pulumi.ComponentResourceOptions) {
    super(type, name, {}, opts);
    this.registerOutputs({});
  }
}

const SCENARIOS: Record<string, () => void> = {
  "same-urn-twice": () => {
    new random.RandomId("twice", { byteLength: 4 });
    new random.RandomId("twice", { byteLength: 8 });
  },
  // Parents of one type under grandparents of different types: the SDK's mock monitor names both
  // children alike (it keeps only the parent's last type); the engine does not.
  "same-name-other-type-chain": () => {
    const a = new Box("test:index:Inner", "inner-a", { parent: new Box("test:index:A", "a") });
    const b = new Box("test:index:Inner", "inner-b", { parent: new Box("test:index:B", "b") });
    new random.RandomId("same", { byteLength: 4 }, { parent: a });
    new random.RandomId("same", { byteLength: 4 }, { parent: b });
  },
  "headscale-node-named-admin": () => {
    const hs = new HeadscaleServer("hs", {
      stack: "unit",
      region: "ams3",
      node: { name: "hs", size: "s-1vcpu-1gb" },
      fqdn: "hs.example.net",
      zoneId: "z",
      image: "headscale/headscale:0.29.2",
      acmeEmail: "ops@example.net",
      acmeCa: "letsencrypt",
      derp: false,
      policy: { admins: ["a@example.net"], nodeTag: "tag:hm-node", adminPorts: [22, 9443], sshUsers: ["root"] },
    });
    hs.authKeyFor("admin");
  },
};

export function runScenario(name: string): ScenarioResult {
  const r = spawnSync(process.execPath, ["--import", "tsx", __filename, name], { cwd: path.resolve(__dirname, "../.."), encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`scenario ${name} exited ${r.status}:\n${r.stderr}`);
  return JSON.parse(r.stdout) as ScenarioResult;
}

if (require.main === module) {
  const scenario = SCENARIOS[process.argv[2] ?? ""];
  if (!scenario) throw new Error(`unknown scenario; known: ${Object.keys(SCENARIOS).join(", ")}`);
  runUnderMocks("unit", { values: {}, secretKeys: [] }, async () => scenario()).then((run) => {
    const out: ScenarioResult = {
      ...(run.error !== undefined ? { error: run.error instanceof Error ? run.error.message : String(run.error) } : {}),
      resources: run.resources.map((r) => ({ type: r.type, name: r.name, parent: r.parent })),
    };
    process.stdout.write(JSON.stringify(out));
  });
}
