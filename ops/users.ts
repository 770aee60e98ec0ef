/**
 * Accounts in bulk for a deployed stack: `npm run users -- --stack NAME --file users.txt`.
 *
 * Registration is closed; accounts are made with Dendrite's shared secret by its own
 * `create-account` inside the Dendrite container, reached only over the admin path: the local
 * Docker engine (target local) or the engine of the node that runs Dendrite over the VPN
 * (`ssh://root@<tailnet address>`). It never talks to a public URL, and refuses a Docker host
 * that is neither. Each password is generated here, sent on create-account's stdin (never in an
 * argv), and written once to a file only the operator can read; the access token create-account
 * logs is never shown.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { isIPv4 } from "node:net";
import { parseArgs } from "node:util";
import { DENDRITE_PORT } from "../components/services/dendrite";

const DENDRITE_SERVICE = "dendrite";
const CONFIG_FILE = "/etc/dendrite/dendrite.yaml";

// matrix-org/dendrite v0.13.8 internal/validate.go: the localpart grammar and length, the password length.
const LOCALPART = /^[0-9a-z_\-+=./]+$/;
const MAX_LOCALPART = 254;

export interface Wanted {
  localpart: string;
  admin: boolean;
}

/** `users.txt`: one account a line, `localpart` or `localpart admin`; `#` starts a comment. Every problem at once. */
export function parseUsersFile(text: string): Wanted[] {
  const wanted: Wanted[] = [];
  const problems: string[] = [];
  const seen = new Set<string>();
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/#.*/, "").trim();
    if (line === "") return;
    const [localpart, flag, ...rest] = line.split(/\s+/);
    const where = `line ${i + 1}`;
    if (rest.length > 0 || (flag !== undefined && flag !== "admin")) problems.push(`${where}: "${line}" is not "localpart" or "localpart admin"`);
    else if (!LOCALPART.test(localpart!) || localpart!.length > MAX_LOCALPART) problems.push(`${where}: "${localpart}" is not a Matrix localpart (a-z, 0-9, and _-+=./; at most ${MAX_LOCALPART})`);
    else if (seen.has(localpart!)) problems.push(`${where}: "${localpart}" is listed twice`);
    else {
      seen.add(localpart!);
      wanted.push({ localpart: localpart!, admin: flag === "admin" });
    }
  });
  if (problems.length > 0) throw new Error(`users file:\n${problems.map((p) => `  ${p}`).join("\n")}`);
  return wanted;
}

const TAILNET_V4 = { base: 0x64400000, mask: 0xffc00000 }; // 100.64.0.0/10 (Tailscale and Headscale)

function inTailnet(address: string): boolean {
  if (isIPv4(address)) {
    const n = address.split(".").reduce((acc, o) => (acc << 8) + Number(o), 0) >>> 0;
    return (n & TAILNET_V4.mask) >>> 0 === TAILNET_V4.base;
  }
  return /^\[?fd7a:115c:a1e0:/i.test(address);
}

/**
 * The admin path only: the local engine's socket, or SSH to a VPN address. A TCP Docker host, or SSH to
 * a public or private non-VPN address, would carry the shared-secret registration where it does not belong.
 */
export function adminPathProblem(dockerHost: string | undefined): string | undefined {
  if (dockerHost === undefined || dockerHost === "" || dockerHost.startsWith("unix://")) return undefined;
  const ssh = /^ssh:\/\/(?:[^@/]+@)?(\[[^\]]+\]|[^:/]+)(?::\d+)?$/.exec(dockerHost);
  if (ssh && inTailnet(ssh[1]!.replace(/^\[|\]$/g, ""))) return undefined;
  return `refusing Docker host ${dockerHost}: accounts are made only over the admin path, the local engine or ssh:// to a VPN (tailnet) address`;
}

/** The node running Dendrite, from the stack outputs of a cloud stack: its VPN address. */
export function dendriteDockerHost(outputs: Record<string, unknown>): string | undefined {
  if (outputs.target !== "digitalocean") return undefined;
  const nodes = (outputs.nodes ?? {}) as Record<string, { roles?: string[]; tailnetIpv4?: string }>;
  const db = Object.values(nodes).find((n) => n.roles?.includes("db"));
  if (!db?.tailnetIpv4) throw new Error("the stack outputs name no node with role db and a tailnet address (run pulumi up first)");
  return `ssh://root@${db.tailnetIpv4}`;
}

/** A generated initial password: 144 random bits, URL-safe, well inside Dendrite's 8-512 characters. */
export function initialPassword(): string {
  return randomBytes(18).toString("base64url");
}

export type Outcome = { localpart: string; result: "created" | "exists" | "failed"; detail?: string; password?: string };

interface Docker {
  (args: string[], input?: string): { status: number; stdout: string; stderr: string };
}

function dockerCli(dockerHost: string | undefined): Docker {
  return (args, input) => {
    const r = spawnSync("docker", args, { input, encoding: "utf8", timeout: 120_000, env: { ...process.env, ...(dockerHost ? { DOCKER_HOST: dockerHost } : {}) } });
    return { status: r.status ?? -1, stdout: r.stdout ?? "", stderr: r.stderr ?? String(r.error ?? "") };
  };
}

/** create-account logs the new account's access token (cmd/create-account/main.go): never pass it on. */
function redact(text: string): string {
  return text.replace(/\(AccessToken: [^)]*\)/g, "(access token withheld)").trim();
}

export function createAccounts(wanted: Wanted[], docker: Docker, password: () => string = initialPassword): Outcome[] {
  const ps = docker(["ps", "-q", "--filter", `label=com.docker.swarm.service.name=${DENDRITE_SERVICE}`]);
  const container = ps.stdout.trim().split("\n")[0] ?? "";
  if (ps.status !== 0 || container === "") throw new Error(`no running ${DENDRITE_SERVICE} container on this Docker host (${redact(ps.stderr) || "docker ps found none"})`);
  return wanted.map(({ localpart, admin }) => {
    const pw = password();
    const args = ["exec", "-i", container, "/usr/bin/create-account", "-config", CONFIG_FILE, "-url", `http://localhost:${DENDRITE_PORT}`, "-username", localpart, "-passwordstdin", ...(admin ? ["-admin"] : [])];
    const r = docker(args, `${pw}\n`);
    const said = redact(`${r.stdout}\n${r.stderr}`);
    if (r.status === 0) return { localpart, result: "created", password: pw };
    // Dendrite's register endpoint answers M_USER_IN_USE for a taken localpart.
    if (/M_USER_IN_USE|already (taken|in use)/i.test(said)) return { localpart, result: "exists" };
    return { localpart, result: "failed", detail: said.split("\n").pop() };
  });
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      stack: { type: "string", short: "s" },
      file: { type: "string", short: "f" },
      out: { type: "string" },
      "docker-host": { type: "string" },
      outputs: { type: "string" },
    },
  });
  if (!values.stack || !values.file) {
    process.stderr.write("usage: npm run users -- --stack NAME --file users.txt [--out FILE]\n");
    return 2;
  }
  const wanted = parseUsersFile(readFileSync(values.file, "utf8"));
  const outputs = values.outputs
    ? (JSON.parse(readFileSync(values.outputs, "utf8")) as Record<string, unknown>)
    : (JSON.parse(spawnSync("npx", ["pulumi", "stack", "output", "--json", "--stack", values.stack], { encoding: "utf8" }).stdout || "{}") as Record<string, unknown>);
  const dockerHost = values["docker-host"] ?? dendriteDockerHost(outputs);
  const refused = adminPathProblem(dockerHost);
  if (refused) {
    process.stderr.write(`${refused}\n`);
    return 2;
  }
  const out = values.out ?? `users-${values.stack}.credentials.tsv`;
  if (existsSync(out)) {
    process.stderr.write(`${out} exists: hand out or delete the passwords it holds first\n`);
    return 2;
  }
  const outcomes = createAccounts(wanted, dockerCli(dockerHost));
  const server = typeof outputs.serverName === "string" ? outputs.serverName : undefined;
  const created = outcomes.filter((o) => o.result === "created");
  // Readable by the operator alone; each line is one person's initial password, to hand over privately.
  writeFileSync(out, created.map((o) => `@${o.localpart}${server ? `:${server}` : ""}\t${o.password}\n`).join(""), { mode: 0o600 });
  for (const o of outcomes) process.stdout.write(`${o.result.padEnd(7)} ${o.localpart}${o.detail ? `: ${o.detail}` : ""}\n`);
  process.stdout.write(
    `${created.length} created, ${outcomes.filter((o) => o.result === "exists").length} already there, ${outcomes.filter((o) => o.result === "failed").length} failed; ` +
      `initial passwords in ${out} (mode 0600): give each person theirs privately, ask them to change it at first login, then delete the file\n`,
  );
  return outcomes.some((o) => o.result === "failed") ? 1 : 0;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
