/**
 * Day-2 drills: a stack deployed into the simulated cloud by the real engine, one change, and what
 * the engine did judged from the cloud's journal (the provider operations in the order the engine
 * ran them), plus invariants every drill checks. Definitions are data (drills/index.ts); this file
 * runs them. Each engine operation is its own process (test/engine/run.ts), as the harness needs.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, realpathSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { advanceClock, readCloud, type CloudState, type JournalEntry } from "../sim/cloud";
import { buildEngine, REPO, sandboxEnv } from "../harness";

export type StackName = "local" | "dev" | "prod" | "funnel";

export interface StateResource {
  urn: string;
  type: string;
  id?: string;
  protect?: boolean;
  inputs?: Record<string, unknown>;
  outputs?: Record<string, unknown>;
}

/** What a step may read to choose its URNs: the simulated cloud and the engine's state before it. */
export interface Before {
  cloud: CloudState;
  state: StateResource[];
}

export interface ProgramEdit {
  file: string;
  from: string;
  to: string;
}

export interface Step {
  /** Stack-file overrides (keys without a namespace are hardened-matrix:); they accumulate over the steps. */
  set?: Record<string, unknown>;
  /** URNs to `up --replace`. */
  replace?: (b: Before) => string[];
  /** Move the simulated clock before the operation. */
  advanceHours?: number;
  /** `pulumi state unprotect` of these URNs before the operation (an operator's act: the drill names its README section). */
  unprotect?: (b: Before) => string[];
  /** A program edit (as a new version of this program would make): file relative to the program, text replaced (several: all in one new version). */
  edit?: ProgramEdit | ProgramEdit[];
  /** The operation (default up). */
  op?: "up" | "refresh" | "preview";
}

export interface Judged {
  drill: Drill;
  /** Cloud and state right before the judged step (after the prepare steps). */
  before: Before;
  after: Before;
  /** The journal entries of the judged step. */
  ran: JournalEntry[];
  /** The judged operation's output and summary. */
  out: string;
  status: number;
  summary?: Record<string, number>;
}

export interface Drill {
  name: string;
  /** One line for `--list`. */
  summary: string;
  stack: StackName;
  /** Stack-file overrides of the first deploy itself (e.g. vpn: headscale); drills with the same stack and base share it. */
  base?: Record<string, unknown>;
  /** Stop the judged operation after this many seconds (default 15 minutes): a wait the old code never ends is a failure, judged from the cloud at that point. */
  timeoutSeconds?: number;
  /** Steps run (and required to succeed) before the judged one, not judged. */
  prepare?: Step[];
  /** The one change that is judged. */
  change: Step;
  /** Exactly how many resources the judged step replaces (a urn deleted and created in it). */
  replaced: number;
  /** The judged step must fail, with this in its output (the refusal README describes). */
  refused?: RegExp;
  /** The README heading (exact text after the #s) describing the manual act this drill needs (unprotect, a refusal). */
  readme?: string;
  /** Issue 15 findings this drill would have caught. */
  findings?: number[];
  /** What the drill says when run with the program of a1620e9 (before issue 15's fixes): recorded from a real run. */
  failsOn?: string;
  /** A defect this drill finds that is not fixed yet (named in the report): the test lists it as todo. */
  knownDefect?: string;
  /** The drill's own assertions (node:assert); throw to fail. */
  check?: (j: Judged) => void;
}

// ---------- journal helpers for the drills' assertions ----------

export const T = {
  droplet: "digitalocean:index/droplet:Droplet",
  volume: "digitalocean:index/volume:Volume",
  attachment: "digitalocean:index/volumeAttachment:VolumeAttachment",
  key: "tailscale:index/tailnetKey:TailnetKey",
  service: "docker:index/service:Service",
  network: "docker:index/network:Network",
  secret: "docker:index/secret:Secret",
  config: "docker:index/serviceConfig:ServiceConfig",
  command: "command:local:Command",
} as const;

const nameOf = (urn: string): string => urn.split("::").pop() ?? urn;

/** URNs deleted and created in `ran` (replaced), as `name` sorted. */
export function replacedNames(ran: JournalEntry[]): string[] {
  const created = new Set(ran.filter((j) => j.op === "create").map((j) => j.urn));
  return [...new Set(ran.filter((j) => j.op === "delete" && created.has(j.urn)).map((j) => j.name))].sort();
}
export function names(ran: JournalEntry[], op: JournalEntry["op"], type?: string): string[] {
  return [...new Set(ran.filter((j) => j.op === op && (!type || j.type === type)).map((j) => j.name))].sort();
}
/** The one journal entry of `op` on `name` (fails listing the journal otherwise). */
export function one(ran: JournalEntry[], op: JournalEntry["op"], name: string, type?: string): JournalEntry {
  const found = ran.filter((j) => j.op === op && j.name === name && (!type || j.type === type));
  assert.equal(found.length, 1, `expected one ${op} of ${name}, found ${found.length}:\n${journalText(ran)}`);
  return found[0]!;
}
export function journalText(ran: JournalEntry[]): string {
  return ran.map((j) => `  ${j.seq} ${j.op} ${j.name} (${j.type})`).join("\n");
}
export function urnsOf(b: Before, pred: (r: StateResource) => boolean): string[] {
  return b.state.filter(pred).map((r) => r.urn);
}
export function byName(b: Before, name: string, type?: string): string[] {
  const found = urnsOf(b, (r) => nameOf(r.urn) === name && (!type || r.type === type));
  if (found.length !== 1) throw new Error(`no single resource named ${name} in the state (${found.length})`);
  return found;
}

// ---------- running ----------

export interface RunOptions {
  /** A git ref whose program (index.ts, components/, Pulumi*.yaml) is run instead of this tree's. */
  programRef?: string;
  /** Keep the drill's sandbox here. */
  keep?: string;
  log?: (line: string) => void;
}

interface OpResult {
  status: number;
  out: string;
  summary?: Record<string, number>;
}

function runOp(dir: string, stack: string, op: string, overrides: Record<string, unknown>, replace: string[], programDirPath: string, timeoutSeconds = 15 * 60): Promise<OpResult> {
  const args = ["--import", "tsx", path.join(REPO, "test/engine/run.ts"), op, "--stack", stack, "--dir", dir, "--json"];
  for (const [k, v] of Object.entries(overrides)) args.push("--set", `${k}=${JSON.stringify(v)}`);
  for (const u of replace) args.push("--replace", u);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, {
      cwd: REPO,
      env: { ...process.env, HM_PROGRAM_DIR: programDirPath, PULUMI_CONFIG_PASSPHRASE: undefined, PULUMI_BACKEND_URL: undefined, PULUMI_ACCESS_TOKEN: undefined },
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group, so a timeout stops the engine and the plugins it started too.
      detached: true,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, "SIGTERM");
      } catch {
        child.kill("SIGTERM");
      }
    }, timeoutSeconds * 1000);
    child.on("close", (code) => {
      clearTimeout(timer);
      const last = stdout.trim().split("\n").pop() ?? "";
      const summary = last.startsWith("{") ? (JSON.parse(last) as { summary: Record<string, number> }).summary : undefined;
      resolve({ status: code ?? -1, out: `${stdout}\n${stderr}${timedOut ? `\nerror: ${op} stopped after ${timeoutSeconds} s` : ""}`, summary });
    });
  });
}

export function readState(dir: string, stack: string): StateResource[] {
  const file = path.join(dir, "state/.pulumi/stacks/hardened-matrix", `${stack}.json`);
  if (!existsSync(file)) return [];
  const doc = JSON.parse(readFileSync(file, "utf8")) as { checkpoint?: { latest?: { resources?: StateResource[] } } };
  return doc.checkpoint?.latest?.resources ?? [];
}
function snapshot(dir: string, stack: string): Before {
  return { cloud: readCloud(path.join(dir, "cloud.json")), state: readState(dir, stack) };
}

/** The program's files, checked out at `ref` (a detached git worktree; node_modules is this tree's). */
export function programAtRef(ref: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), "hm-drill-program-"));
  rmSync(dir, { recursive: true, force: true });
  execFileSync("git", ["-C", REPO, "worktree", "add", "--detach", dir, ref], { stdio: ["ignore", "ignore", "pipe"] });
  symlinkSync(realpathSync(path.join(REPO, "node_modules")), path.join(dir, "node_modules"));
  return {
    dir,
    remove: () => {
      try {
        execFileSync("git", ["-C", REPO, "worktree", "remove", "--force", dir], { stdio: "ignore" });
      } catch {
        rmSync(dir, { recursive: true, force: true });
        execFileSync("git", ["-C", REPO, "worktree", "prune"], { stdio: "ignore" });
      }
    },
  };
}

/** A copy of the program with one edit (a new version of the program, as an operator would deploy it). */
function editedProgram(from: string, edits: ProgramEdit | ProgramEdit[], into: string): string {
  mkdirSync(into, { recursive: true });
  for (const f of readdirSync(from)) {
    if (f === "index.ts" || f === "components" || f === "package.json" || /^Pulumi(\.[a-z0-9-]+)?\.yaml$/.test(f)) cpSync(path.join(from, f), path.join(into, f), { recursive: true });
  }
  symlinkSync(realpathSync(path.join(REPO, "node_modules")), path.join(into, "node_modules"));
  for (const edit of Array.isArray(edits) ? edits : [edits]) {
    const file = path.join(into, edit.file);
    const text = readFileSync(file, "utf8");
    if (!text.includes(edit.from)) throw new Error(`program edit: ${edit.file} has no ${JSON.stringify(edit.from)}`);
    writeFileSync(file, text.split(edit.from).join(edit.to));
  }
  return into;
}

function readmeHeadings(): string[] {
  return readFileSync(path.join(REPO, "README.md"), "utf8")
    .split("\n")
    .filter((l) => /^#{1,6} /.test(l))
    .map((l) => l.replace(/^#+ /, "").trim());
}

/** Every volume attached to at most one droplet at every point of the journal, replayed from `before`. */
function checkVolumesNeverShared(before: CloudState, after: CloudState, ran: JournalEntry[]): void {
  const volumeOf = new Map<string, string>();
  for (const o of [...Object.values(before.objects), ...Object.values(after.objects)]) if (o.type === T.attachment) volumeOf.set(o.id, String(o.state.volumeId));
  const live = new Map<string, Set<string>>();
  for (const o of Object.values(before.objects)) {
    if (o.type !== T.attachment) continue;
    const v = volumeOf.get(o.id)!;
    live.set(v, new Set([...(live.get(v) ?? []), o.id]));
  }
  for (const j of ran.filter((x) => x.type === T.attachment)) {
    const v = volumeOf.get(j.id);
    if (!v) continue; // created and deleted within the run and never seen: the replay of the creates below catches it
    const set = live.get(v) ?? new Set<string>();
    if (j.op === "delete") set.delete(j.id);
    else set.add(j.id);
    live.set(v, set);
    assert.ok(set.size <= 1, `volume ${v} attached to two droplets after journal seq ${j.seq}: ${[...set].join(", ")}`);
  }
  for (const v of Object.values(after.objects).filter((o) => o.type === T.volume)) {
    assert.ok(((v.state.dropletIds as string[] | undefined) ?? []).length <= 1, `volume ${String(v.state.name)} is attached to ${JSON.stringify(v.state.dropletIds)}`);
  }
}

export interface DrillResult {
  name: string;
  ok: boolean;
  message: string;
  seconds: number;
  replaced?: string[];
  /** Docker services the judged step updated in place. */
  updated?: string[];
  dir?: string;
}

/** Deploys each (stack, program) baseline once per process; drills copy its sandbox. */
export class DrillRunner {
  private root = mkdtempSync(path.join(tmpdir(), "hm-drills-"));
  private baselines = new Map<string, Promise<string>>();
  private program: { dir: string; remove: () => void } | undefined;
  readonly programDir: string;

  constructor(private opts: RunOptions = {}) {
    buildEngine();
    if (opts.programRef) this.program = programAtRef(opts.programRef);
    this.programDir = this.program?.dir ?? REPO;
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  private baseline(stack: StackName, base: Record<string, unknown>): Promise<string> {
    const key = `${stack} ${JSON.stringify(base)}`;
    let p = this.baselines.get(key);
    if (!p) {
      const n = this.baselines.size;
      p = (async () => {
        const dir = path.join(this.root, `baseline-${stack}-${n}`);
        const t = Date.now();
        const r = await runOp(dir, stack, "up", base, [], this.programDir);
        if (r.status !== 0) throw new Error(`the baseline up of ${key} failed:\n${tail(r.out)}`);
        this.log(`baseline ${key}: ${JSON.stringify(r.summary)} in ${((Date.now() - t) / 1000).toFixed(0)} s`);
        return dir;
      })();
      this.baselines.set(key, p);
    }
    return p;
  }

  async run(drill: Drill): Promise<DrillResult> {
    const t = Date.now();
    const dir = this.opts.keep ? path.resolve(this.opts.keep) : path.join(this.root, drill.name);
    let replaced: string[] | undefined;
    let updated: string[] | undefined;
    try {
      const baseSet = withNamespace(drill.base ?? {});
      const base = await this.baseline(drill.stack, baseSet);
      rmSync(dir, { recursive: true, force: true });
      cpSync(base, dir, { recursive: true });
      const start = snapshot(dir, drill.stack);
      const overrides: Record<string, unknown> = { ...baseSet };
      let programDirPath = this.programDir;
      let edits = 0;
      const doStep = async (step: Step, judged: boolean): Promise<OpResult & { before: Before }> => {
        Object.assign(overrides, withNamespace(step.set ?? {}));
        if (step.edit) programDirPath = editedProgram(programDirPath, step.edit, path.join(this.root, `${drill.name}-program-${++edits}`));
        if (step.advanceHours) advanceClock(step.advanceHours * 3600, path.join(dir, "cloud.json"));
        const before = snapshot(dir, drill.stack);
        if (step.unprotect) {
          const bin = buildEngine();
          for (const urn of step.unprotect(before)) {
            execFileSync(path.join(bin, "pulumi"), ["state", "unprotect", urn, "--stack", drill.stack, "--yes", "--non-interactive"], {
              cwd: path.join(dir, "project"),
              env: { ...process.env, ...sandboxEnv(dir) },
              stdio: ["ignore", "pipe", "pipe"],
            });
          }
        }
        const replace = step.replace?.(before) ?? [];
        // The state right before the operation (after any unprotect).
        const atOp = step.unprotect ? snapshot(dir, drill.stack) : before;
        const r = await runOp(dir, drill.stack, step.op ?? "up", overrides, replace, programDirPath, judged ? drill.timeoutSeconds : undefined);
        if (!judged && r.status !== 0) throw new Error(`a prepare step failed:\n${r.out.slice(-3000)}`);
        return { ...r, before: atOp };
      };
      for (const step of drill.prepare ?? []) await doStep(step, false);
      const r = await doStep(drill.change, true);
      const after = snapshot(dir, drill.stack);
      const ran = after.cloud.journal.slice(r.before.cloud.journal.length);
      const sinceStart = after.cloud.journal.slice(start.cloud.journal.length);
      replaced = replacedNames(ran);
      updated = names(ran, "update", T.service);
      const j: Judged = { drill, before: r.before, after, ran, out: r.out, status: r.status, summary: r.summary };

      // The manual act, if any, is one the README describes.
      if (drill.readme !== undefined) assert.ok(readmeHeadings().includes(drill.readme), `README.md has no heading "${drill.readme}"`);
      const manual = drill.refused !== undefined || [...(drill.prepare ?? []), drill.change].some((s) => s.unprotect);
      assert.ok(!manual || drill.readme !== undefined, "this drill needs a manual act (a refusal or `pulumi state unprotect`) but names no README section");

      if (drill.refused) {
        assert.notEqual(r.status, 0, `the change must be refused (${drill.refused}), but it succeeded: ${JSON.stringify(r.summary)}\n${journalText(ran)}`);
        assert.match(r.out, drill.refused, `the refusal is not the one README describes:\n${tail(r.out)}`);
      } else if (r.status !== 0) {
        // What the drill's own checks see in the cloud says more than the engine's last error.
        let seen = "";
        try {
          drill.check?.(j);
        } catch (e) {
          seen = `${(e as Error).message}\n`;
        }
        assert.fail(`${seen}the change failed:\n${tail(r.out)}`);
      }
      // Nothing protected replaced or deleted, from the first deploy on.
      const protectedUrns = new Set(start.state.filter((x) => x.protect).map((x) => x.urn));
      const hit = sinceStart.filter((e) => e.op === "delete" && protectedUrns.has(e.urn));
      assert.deepEqual(hit.map((e) => e.name), [], "a protected resource was deleted or replaced");
      checkVolumesNeverShared(start.cloud, after.cloud, sinceStart);
      drill.check?.(j);
      assert.equal(replaced.length, drill.replaced, `expected ${drill.replaced} replaced, the engine replaced ${replaced.length}: ${replaced.join(", ")}\n${journalText(ran)}`);

      // Converged: a second up with the same config changes nothing.
      const noChange = Object.keys(drill.change).length === 0;
      if (!drill.refused && !noChange && (drill.change.op ?? "up") === "up") {
        const again = await runOp(dir, drill.stack, "up", overrides, [], programDirPath);
        assert.equal(again.status, 0, `the second up failed:\n${tail(again.out)}`);
        const changes = Object.entries(again.summary ?? {}).filter(([op, n]) => op !== "same" && n > 0);
        const more = readCloud(path.join(dir, "cloud.json")).journal.slice(after.cloud.journal.length);
        assert.deepEqual(changes, [], `the second up is not empty (not converged):\n${journalText(more)}`);
        assert.deepEqual(more, [], `the second up ran provider operations:\n${journalText(more)}`);
      }
      return { name: drill.name, ok: true, message: "ok", seconds: (Date.now() - t) / 1000, replaced, updated, dir: this.opts.keep ? dir : undefined };
    } catch (e) {
      const err = e as Error;
      return { name: drill.name, ok: false, message: (err.message || String(e)).split("\n").slice(0, 60).join("\n"), seconds: (Date.now() - t) / 1000, replaced, updated, dir: this.opts.keep ? dir : undefined };
    } finally {
      if (!this.opts.keep) rmSync(dir, { recursive: true, force: true });
    }
  }

  /** Runs drills, `jobs` at a time (each engine operation is its own process). */
  async runAll(drills: Drill[], jobs = 1, onResult?: (r: DrillResult) => void): Promise<DrillResult[]> {
    const results: DrillResult[] = new Array(drills.length);
    let next = 0;
    const worker = async () => {
      while (next < drills.length) {
        const i = next++;
        results[i] = await this.run(drills[i]!);
        onResult?.(results[i]!);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, jobs) }, worker));
    return results;
  }

  close(): void {
    this.program?.remove();
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** Stack-file keys without a namespace are the program's (hardened-matrix:). */
function withNamespace(set: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(set).map(([k, v]) => [k.includes(":") ? k : `hardened-matrix:${k}`, v]));
}

function tail(out: string): string {
  // The engine's diagnostics are at the end; drop the long resource listing in front.
  const lines = out.split("\n").filter((l) => l.trim() !== "");
  const i = lines.findIndex((l) => /^Diagnostics:|error:/.test(l.trim()));
  return (i >= 0 ? lines.slice(i) : lines.slice(-40)).slice(0, 40).join("\n");
}
