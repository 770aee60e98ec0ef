/**
 * `npm run bench`: memory (RSS) of each program of the local stack after startup and under a small load, and
 * message send-to-sync latency through Traefik versus straight to Dendrite, in one run. A measurement,
 * not a test: nothing here asserts a time.
 *
 *   npm run bench                                  30 users, 60 s of messages
 *   npm run bench -- --users 2 --seconds 5          a smoke run
 *   options: --users N --seconds S --per-room N (users a room, default 10) --interval MS (each user sends a
 *            message every MS, default 10000: 3 messages/s for 30 users) --out FILE (default out/bench.json)
 *
 * The programs are the host stack's (test/e2e/hostStack.ts: PostgreSQL 15 and coTURN from Debian, Dendrite
 * v0.13.8 from the Go module proxy, the pin being v0.15.2) and the real Traefik (test/bench/traefikFront.ts),
 * all with the local plan's rendered configs. Users are created with create-account (the shared secret), as
 * the e2e scenario does. Half of the users talk through Traefik (HTTPS, the rendered routers and
 * middlewares), half straight to Dendrite (HTTP on loopback); every room has both. A latency is the time
 * from the start of a send (PUT .../send) to the moment a member's long-polling /sync returns the event.
 * Memory: VmRSS and VmHWM from /proc/<pid>/status (Postgres: the postmaster and every backend summed, which
 * counts shared_buffers once per process that touched them, so also the summed Pss from smaps_rollup).
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import { cpus, loadavg, totalmem, hostname, release } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { startHostStack, type HostStack } from "../e2e/hostStack";
import { planToDisk, ROOT } from "../support/plan";
import { startTraefikFront, type TraefikFront } from "./traefikFront";

type Via = "traefik" | "direct";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- /proc ----
function status(pid: number): { rssKb: number; hwmKb: number; anonKb: number; shmemKb: number; ppid: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(s)?.[1] ?? 0);
    return { rssKb: kb("VmRSS"), hwmKb: kb("VmHWM"), anonKb: kb("RssAnon"), shmemKb: kb("RssShmem"), ppid: Number(/^PPid:\s+(\d+)/m.exec(s)?.[1] ?? 0) };
  } catch {
    return undefined;
  }
}
function pssKb(pid: number): number {
  try {
    return Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0);
  } catch {
    return 0;
  }
}
/** utime + stime in clock ticks (USER_HZ, 100 on Linux). */
function cpuTicks(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
}
function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
  } catch {
    return [];
  }
}
const allPids = () => readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number);

interface Sample {
  rssMb: number;
  hwmMb: number;
  pssMb: number;
  /** Private anonymous memory (heap, stacks): what a cgroup limit holds and cannot reclaim. Postgres adds its shared memory once. */
  anonMb: number;
  processes: number;
}
type Programs = Record<"postgres" | "dendrite" | "coturn" | "traefik", () => number[]>;

/** The stack's processes, found by what their command lines name (the host stack keeps its pids private). */
function programs(stack: HostStack, traefik: TraefikFront): Programs {
  const find = (pred: (argv: string[]) => boolean) => allPids().filter((p) => pred(cmdline(p)));
  const pgData = path.join(stack.dir, "pgdata");
  const turnConf = path.join(stack.dir, "turnserver.conf");
  return {
    postgres: () => {
      const master = find((a) => path.basename(a[0] ?? "") === "postgres" && a.includes(pgData));
      if (master.length === 0) return [];
      return [...master, ...allPids().filter((p) => master.includes(status(p)?.ppid ?? -1))];
    },
    dendrite: () => find((a) => path.basename(a[0] ?? "") === "dendrite" && a.includes(stack.dendriteConfig)),
    coturn: () => find((a) => path.basename(a[0] ?? "") === "turnserver" && a.includes(turnConf)),
    traefik: () => [traefik.pid],
  };
}
function sample(pids: number[]): Sample {
  let rss = 0,
    hwm = 0,
    pss = 0,
    anon = 0,
    shmem = 0,
    n = 0;
  for (const p of pids) {
    const s = status(p);
    if (!s) continue;
    n++;
    rss += s.rssKb;
    hwm += s.hwmKb;
    pss += pssKb(p);
    anon += s.anonKb;
    shmem = Math.max(shmem, s.shmemKb);
  }
  const mb = (kb: number) => +(kb / 1024).toFixed(1);
  return { rssMb: mb(rss), hwmMb: mb(hwm), pssMb: mb(pss), anonMb: mb(anon + shmem), processes: n };
}

// ---- a small Matrix client over keep-alive connections (the same client code on both paths) ----
interface Reply {
  status: number;
  json: Record<string, unknown>;
}
class Api {
  private agent: http.Agent;
  constructor(
    readonly via: Via,
    private readonly target: { port: number; host?: string },
  ) {
    this.agent = via === "traefik" ? new https.Agent({ keepAlive: true, rejectUnauthorized: false, servername: target.host }) : new http.Agent({ keepAlive: true });
  }
  call(method: string, p: string, token?: string, body?: unknown, timeoutMs = 60_000): Promise<Reply> {
    const mod = this.via === "traefik" ? https : http;
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = mod.request(
        {
          agent: this.agent,
          host: "127.0.0.1",
          port: this.target.port,
          method,
          path: p,
          timeout: timeoutMs,
          headers: {
            ...(this.target.host ? { Host: this.target.host } : {}),
            ...(token ? { Authorization: `Bearer ${token}` } : {}),
            ...(data ? { "Content-Type": "application/json", "Content-Length": data.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            let json: Record<string, unknown> = {};
            try {
              json = JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>;
            } catch {
              /* not JSON */
            }
            resolve({ status: res.statusCode ?? 0, json });
          });
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.on("timeout", () => req.destroy(new Error(`${method} ${p.split("?")[0]}: timeout`)));
      req.end(data);
    });
  }
  close(): void {
    this.agent.destroy();
  }
}

interface User {
  localpart: string;
  password: string;
  id: string;
  token: string;
  api: Api;
  room: string;
  since: string;
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return +sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)].toFixed(1);
}
function summary(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, p50Ms: percentile(s, 50), p99Ms: percentile(s, 99), maxMs: s.length ? +s[s.length - 1].toFixed(1) : null };
}

/** The memory limit and reservation the local plan sets per service (MiB), for the comparison. */
function plannedMemory(resources: { type: string; name: string; inputs: Record<string, unknown> }[]): Record<string, { limitMb: number; reservationMb: number }> {
  const out: Record<string, { limitMb: number; reservationMb: number }> = {};
  for (const r of resources) {
    if (r.type !== "docker:index/service:Service") continue;
    const res = (r.inputs.taskSpec as { resources?: { limits?: { memoryBytes?: number }; reservation?: { memoryBytes?: number } } }).resources;
    out[String(r.inputs.name)] = { limitMb: Math.round((res?.limits?.memoryBytes ?? 0) / 2 ** 20), reservationMb: Math.round((res?.reservation?.memoryBytes ?? 0) / 2 ** 20) };
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      users: { type: "string", default: "30" },
      seconds: { type: "string", default: "60" },
      "per-room": { type: "string", default: "10" },
      interval: { type: "string", default: "10000" },
      out: { type: "string", default: path.join(ROOT, "out/bench.json") },
    },
  });
  const n = Number(values.users);
  const seconds = Number(values.seconds);
  const perRoom = Number(values["per-room"]);
  const interval = Number(values.interval);
  for (const [k, v] of Object.entries({ users: n, seconds, "per-room": perRoom, interval })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer`);
  }
  if (n < 2) throw new Error("--users must be at least 2 (one through Traefik, one straight)");
  const say = (s: string) => process.stdout.write(`${s}\n`);
  const machine = {
    hostname: hostname(),
    kernel: release(),
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model ?? "",
    memoryMb: Math.round(totalmem() / 2 ** 20),
    loadAverageAtStart: loadavg().map((l) => +l.toFixed(2)),
    node: process.version,
  };
  say(`# machine: ${machine.nproc} CPUs (${machine.cpuModel}), ${machine.memoryMb} MiB, load average ${machine.loadAverageAtStart.join(" ")}`);

  const plan = planToDisk("local");
  const stack = await startHostStack({ plan, log: (l) => say(`# ${l}`) });
  let traefik: TraefikFront | undefined;
  const apis: Api[] = [];
  let stopping = false;
  try {
    const dendritePort = Number(new URL(stack.clientBaseUrl).port);
    traefik = await startTraefikFront(plan, dendritePort);
    say(`# traefik v3.7.13 on https://127.0.0.1:${traefik.httpsPort} (Host ${traefik.host}) in front of dendrite v0.13.8 at ${stack.clientBaseUrl}`);
    const progs = programs(stack, traefik);
    const measureAll = () => Object.fromEntries(Object.entries(progs).map(([k, f]) => [k, sample(f())])) as Record<keyof Programs, Sample>;
    for (const [k, f] of Object.entries(progs)) if (f().length === 0) throw new Error(`no ${k} process found`);

    await sleep(3000); // let startup settle
    const startup = measureAll();

    // ---- users, rooms ----
    const run = randomBytes(3).toString("hex");
    const viaApi = (via: Via) => {
      const a = via === "traefik" ? new Api("traefik", { port: traefik!.httpsPort, host: traefik!.host }) : new Api("direct", { port: dendritePort });
      apis.push(a);
      return a;
    };
    const users: User[] = Array.from({ length: n }, (_, i) => ({
      localpart: `bench-${run}-${i}`,
      password: randomBytes(18).toString("base64url"),
      id: "",
      token: "",
      api: viaApi(i % 2 === 0 ? "traefik" : "direct"),
      room: "",
      since: "",
    }));
    const t0 = Date.now();
    for (let i = 0; i < users.length; i += 4) await Promise.all(users.slice(i, i + 4).map((u) => stack.register(u.localpart, u.password)));
    say(`# ${n} users created with create-account in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    for (const u of users) {
      const r = await u.api.call("POST", "/_matrix/client/v3/login", undefined, { type: "m.login.password", identifier: { type: "m.id.user", user: u.localpart }, password: u.password });
      if (r.status !== 200) throw new Error(`login ${u.localpart} via ${u.api.via}: ${r.status} ${JSON.stringify(r.json)}`);
      u.token = String(r.json.access_token);
      u.id = String(r.json.user_id);
    }
    const rooms = Math.ceil(n / perRoom);
    const roomIds: string[] = [];
    for (let k = 0; k < rooms; k++) {
      const owner = users[k];
      const r = await owner.api.call("POST", "/_matrix/client/v3/createRoom", owner.token, { preset: "public_chat", name: `bench ${run} ${k}` });
      if (r.status !== 200) throw new Error(`createRoom: ${r.status} ${JSON.stringify(r.json)}`);
      roomIds.push(String(r.json.room_id));
    }
    for (const [i, u] of users.entries()) {
      u.room = roomIds[i % rooms];
      if (i < rooms) continue;
      const r = await u.api.call("POST", `/_matrix/client/v3/join/${encodeURIComponent(u.room)}`, u.token, {});
      if (r.status !== 200) throw new Error(`join ${u.localpart}: ${r.status} ${JSON.stringify(r.json)}`);
    }
    const filter = encodeURIComponent(JSON.stringify({ presence: { types: [] }, account_data: { types: [] }, room: { timeline: { limit: 50 }, state: { lazy_load_members: true }, ephemeral: { types: [] } } }));
    await Promise.all(
      users.map(async (u) => {
        const r = await u.api.call("GET", `/_matrix/client/v3/sync?filter=${filter}&timeout=0`, u.token);
        if (r.status !== 200) throw new Error(`initial sync ${u.localpart}: ${r.status}`);
        u.since = String(r.json.next_batch);
      }),
    );
    say(`# ${rooms} room(s) of up to ${perRoom}, every user joined and synced; load for ${seconds} s, a message per user every ${interval} ms`);

    // ---- load ----
    const sent = new Map<string, { at: number; via: Via; room: string }>();
    const members = (room: string) => users.filter((u) => u.room === room).length;
    const latency: Record<string, number[]> = { "traefik->traefik": [], "direct->direct": [], "traefik->direct": [], "direct->traefik": [] };
    const sendMs: Record<Via, number[]> = { traefik: [], direct: [] };
    const errors: string[] = [];
    let rateLimited = 0;
    const syncLoop = async (u: User) => {
      while (!stopping) {
        try {
          const r = await u.api.call("GET", `/_matrix/client/v3/sync?filter=${filter}&timeout=10000&since=${encodeURIComponent(u.since)}`, u.token, undefined, 30_000);
          const now = performance.now();
          if (r.status !== 200) {
            if (r.status === 429) rateLimited++;
            else errors.push(`sync ${r.status}`);
            await sleep(200);
            continue;
          }
          u.since = String(r.json.next_batch);
          const join = ((r.json.rooms as { join?: Record<string, { timeline?: { events?: { sender?: string; content?: { body?: string } }[] } }> } | undefined)?.join ?? {}) as Record<string, { timeline?: { events?: { sender?: string; content?: { body?: string } }[] } }>;
          for (const room of Object.values(join)) {
            for (const e of room.timeline?.events ?? []) {
              const id = /^bench (\S+)$/.exec(e.content?.body ?? "")?.[1];
              const s = id ? sent.get(id) : undefined;
              if (!s || e.sender === u.id) continue;
              latency[`${s.via}->${u.api.via}`].push(now - s.at);
            }
          }
        } catch (e) {
          if (!stopping) errors.push(`sync: ${(e as Error).message}`);
        }
      }
    };
    const sendLoop = async (u: User, until: number) => {
      let txn = 0;
      await sleep(Math.random() * Math.min(interval, seconds * 500)); // spread the senders out
      while (Date.now() < until) {
        const id = `${u.localpart}-${txn++}`;
        const at = performance.now();
        sent.set(id, { at, via: u.api.via, room: u.room });
        try {
          const r = await u.api.call("PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(u.room)}/send/m.room.message/${id}`, u.token, { msgtype: "m.text", body: `bench ${id}` });
          if (r.status === 200) sendMs[u.api.via].push(performance.now() - at);
          else if (r.status === 429) rateLimited++;
          else errors.push(`send ${r.status} ${String(r.json.errcode ?? "")}`);
        } catch (e) {
          errors.push(`send: ${(e as Error).message}`);
        }
        await sleep(Math.max(0, interval - (performance.now() - at)) * (0.8 + Math.random() * 0.4));
      }
    };
    const peak = Object.fromEntries(Object.keys(progs).map((k) => [k, { rssMb: 0, hwmMb: 0, pssMb: 0, anonMb: 0, processes: 0 }])) as Record<keyof Programs, Sample>;
    const cpuOf = () => Object.fromEntries(Object.entries(progs).map(([k, f]) => [k, f().reduce((a, p) => a + cpuTicks(p), 0)])) as Record<keyof Programs, number>;
    const cpuBefore = cpuOf();
    const syncs = users.map(syncLoop);
    const loadStart = Date.now();
    const until = loadStart + seconds * 1000;
    const senders = Promise.all(users.map((u) => sendLoop(u, until)));
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        for (const [k, s] of Object.entries(measureAll()) as [keyof Programs, Sample][]) {
          const p = peak[k];
          // Each column's own peak over the samples.
          peak[k] = { rssMb: Math.max(p.rssMb, s.rssMb), hwmMb: Math.max(p.hwmMb, s.hwmMb), pssMb: Math.max(p.pssMb, s.pssMb), anonMb: Math.max(p.anonMb, s.anonMb), processes: Math.max(p.processes, s.processes) };
        }
        await sleep(1000);
      }
    })();
    await senders;
    const sendSeconds = (Date.now() - loadStart) / 1000;
    await sleep(3000); // the last deliveries
    const end = measureAll();
    const cpuAfter = cpuOf();
    // Postgres backends that exited during the load are not counted: a lower bound for postgres.
    const cpuSeconds = Object.fromEntries(Object.keys(progs).map((k) => [k, +((cpuAfter[k as keyof Programs] - cpuBefore[k as keyof Programs]) / 100).toFixed(1)]));
    sampling = false;
    await sampler;
    stopping = true;
    for (const a of apis) a.close();
    await Promise.allSettled(syncs);

    const expectedDeliveries = [...sent.values()].reduce((a, m) => a + members(m.room) - 1, 0);
    const delivered = Object.values(latency).reduce((a, l) => a + l.length, 0);
    const result = {
      when: new Date().toISOString(),
      machine,
      programs: {
        dendrite: "v0.13.8 from the Go module proxy (github.com/matrix-org/dendrite); the stacks pin matrixdotorg/dendrite-monolith:v0.15.2",
        postgres: "Debian's PostgreSQL 15 (the pin is postgres:17.9-alpine), the local plan's server arguments",
        coturn: "Debian's coturn, the local plan's turnserver.conf",
        traefik: "v3.7.13 from the Go module proxy, the local plan's static and dynamic config and the dendrite service's labels",
      },
      load: { users: n, rooms, perRoom, messageIntervalMs: interval, sendingSeconds: +sendSeconds.toFixed(1), messagesSent: sent.size, deliveriesSeen: delivered, deliveriesExpected: expectedDeliveries, rateLimited, errors: errors.length, firstErrors: errors.slice(0, 5) },
      cpuSecondsDuringLoad: cpuSeconds,
      memoryMb: { afterStartup: startup, underLoadPeak: peak, afterLoad: end },
      latencyMs: { sendToSync: Object.fromEntries(Object.entries(latency).map(([k, v]) => [k, summary(v)])), sendRequest: { traefik: summary(sendMs.traefik), direct: summary(sendMs.direct) } },
      plannedMemoryLocalStack: plannedMemory(plan.resources as unknown as { type: string; name: string; inputs: Record<string, unknown> }[]),
      adaptations: [...stack.adaptations, ...traefik.adaptations],
    };
    mkdirSync(path.dirname(values.out), { recursive: true });
    writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);

    const pad = (s: string | number | null, w: number) => String(s ?? "-").padStart(w);
    say("");
    say(`memory (MiB)  startup RSS  startup anon  peak RSS  VmHWM  peak PSS  peak anon  procs  CPU s`);
    for (const k of Object.keys(progs) as (keyof Programs)[]) {
      say(`${k.padEnd(12)}${pad(startup[k].rssMb, 13)}${pad(startup[k].anonMb, 14)}${pad(peak[k].rssMb, 10)}${pad(peak[k].hwmMb, 7)}${pad(peak[k].pssMb, 10)}${pad(peak[k].anonMb, 11)}${pad(peak[k].processes, 7)}${pad(cpuSeconds[k], 7)}`);
    }
    const tot = (s: Record<keyof Programs, Sample>, f: "rssMb" | "pssMb" | "anonMb") => +Object.values(s).reduce((a, x) => a + x[f], 0).toFixed(1);
    say(`${"total".padEnd(12)}${pad(tot(startup, "rssMb"), 13)}${pad(tot(startup, "anonMb"), 14)}${pad(tot(peak, "rssMb"), 10)}${pad("", 7)}${pad(tot(peak, "pssMb"), 10)}${pad(tot(peak, "anonMb"), 11)}`);
    say("");
    say(`send-to-sync (ms)     n      p50      p99      max`);
    for (const [k, v] of Object.entries(result.latencyMs.sendToSync)) say(`${k.padEnd(18)}${pad(v.n, 6)}${pad(v.p50Ms, 9)}${pad(v.p99Ms, 9)}${pad(v.maxMs, 9)}`);
    for (const [k, v] of Object.entries(result.latencyMs.sendRequest)) say(`${`PUT send ${k}`.padEnd(18)}${pad(v.n, 6)}${pad(v.p50Ms, 9)}${pad(v.p99Ms, 9)}${pad(v.maxMs, 9)}`);
    say("");
    say(`${sent.size} messages, ${delivered} deliveries seen, ${rateLimited} rate-limited, ${errors.length} errors${errors.length ? ` (${errors.slice(0, 3).join("; ")})` : ""}`);
    say(`wrote ${values.out}`);
  } finally {
    stopping = true;
    for (const a of apis) a.close();
    await traefik?.stop();
    await stack.stop();
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
