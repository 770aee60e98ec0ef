import { closeSync, existsSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";

/**
 * The simulated cloud: one JSON file (path in HM_SIM_CLOUD) that every simulated provider process
 * reads and writes under a lock file. It holds what the real APIs would hold (droplets, volumes and
 * their attachments, tailnet keys and devices, swarm objects, DNS records), a simulated clock, a
 * log of every command the command provider would have run (never run), and a journal of every
 * provider operation in the order the engine asked for it (drills judge the engine's step order).
 */
export interface SimObject {
  type: string;
  id: string;
  urn: string;
  /** Plain (secrets unwrapped) inputs and computed outputs, as the provider last wrote them. */
  state: Record<string, unknown>;
  createdAt: string;
}

export interface CommandRun {
  urn: string;
  op: "create" | "update" | "delete";
  /** The command line that would have run (create/delete/update), and the sha256 of its stdin. */
  command: string;
  stdinSha256?: string;
  at: string;
}

/** One provider operation that the simulated cloud carried out, in the order it happened. */
export interface JournalEntry {
  /** The cloud's `seq` when the operation finished: strictly increasing across every provider process. */
  seq: number;
  op: "create" | "update" | "delete";
  type: string;
  /** The resource's name (the last part of its urn). */
  name: string;
  urn: string;
  id: string;
}

export interface TailnetDevice {
  hostname: string;
  tags: string[];
  created: string;
  addresses: string[];
  nodeId: string;
}

export interface CloudState {
  /** The simulated clock (RFC 3339); every object is stamped with it. Advanced only by the harness. */
  clock: string;
  seq: number;
  objects: Record<string, SimObject>;
  commands: CommandRun[];
  journal: JournalEntry[];
  devices: TailnetDevice[];
  /** Swarm node ids by the admin address a join or init ran at (what `docker info` would print there). */
  swarmNodeIds: Record<string, string>;
}

export const SIM_EPOCH = "2026-01-01T00:00:00.000Z";

export function cloudPath(): string {
  const p = process.env.HM_SIM_CLOUD;
  if (!p) throw new Error("HM_SIM_CLOUD (the simulated cloud's file) is not set");
  return p;
}

export function emptyCloud(): CloudState {
  return { clock: SIM_EPOCH, seq: 0, objects: {}, commands: [], journal: [], devices: [], swarmNodeIds: {} };
}

export function readCloud(file = cloudPath()): CloudState {
  if (!existsSync(file)) return emptyCloud();
  return { ...emptyCloud(), ...(JSON.parse(readFileSync(file, "utf8")) as CloudState) };
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Runs `change` on the cloud under an exclusive lock (the providers are separate processes). */
export function withCloud<T>(change: (cloud: CloudState) => T, file = cloudPath()): T {
  const lock = `${file}.lock`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      closeSync(openSync(lock, "wx"));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      // A lock older than 30 s belongs to a process that died holding it.
      try {
        if (Date.now() - statSync(lock).mtimeMs > 30_000) rmSync(lock, { force: true });
      } catch {
        // gone meanwhile
      }
      if (Date.now() > deadline) throw new Error(`simulated cloud ${file} stayed locked for 30 s`);
      sleep(20);
    }
  }
  try {
    const cloud = readCloud(file);
    const result = change(cloud);
    writeFileSync(`${file}.tmp`, `${JSON.stringify(cloud, null, 1)}\n`);
    renameSync(`${file}.tmp`, file);
    return result;
  } finally {
    rmSync(lock, { force: true });
  }
}

/** Moves the simulated clock forward (drills: "two simulated hours later"). */
export function advanceClock(seconds: number, file = cloudPath()): string {
  return withCloud((c) => {
    c.clock = new Date(Date.parse(c.clock) + seconds * 1000).toISOString();
    return c.clock;
  }, file);
}

export function nextSeq(c: CloudState): number {
  c.seq += 1;
  return c.seq;
}

/** Appends one provider operation to the journal (under the caller's lock). */
export function journal(c: CloudState, op: JournalEntry["op"], type: string, urn: string, id: string): void {
  c.journal.push({ seq: nextSeq(c), op, type, name: urn.split("::").pop() ?? urn, urn, id });
}

export function objectsOf(c: CloudState, type: string): SimObject[] {
  return Object.values(c.objects).filter((o) => o.type === type);
}
