import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { dendriteDir } from "./e2e/hostStack";
import { ROOT } from "./support/plan";
import { findTools } from "./support/realTool";

// A smoke run of `npm run bench` (test/bench/bench.ts) with 2 users for 5 s: it completes and writes its
// JSON with every program measured and messages delivered on both paths. No time is asserted: the numbers
// are a measurement (README "Benchmark"), not a pass mark.

const { skip: toolSkip } = findTools({
  initdb: ["initdb", "postgresql"],
  postgres: ["postgres", "postgresql"],
  turnserver: ["turnserver", "coturn"],
  setpriv: ["setpriv", "util-linux"],
});
const DENDRITE_DIR = dendriteDir();
const dendriteMissing = !existsSync(join(DENDRITE_DIR, "dendrite")) || !existsSync(join(DENDRITE_DIR, "create-account"));
const traefikMissing = (() => {
  try {
    execFileSync(join(ROOT, "test/images/build-traefik.sh"), ["--check"], { stdio: "ignore" });
    return false;
  } catch {
    return true;
  }
})();
if ((dendriteMissing || traefikMissing) && process.env.CI) throw new Error("the bench needs Dendrite v0.13.8 and Traefik built (.ci/run builds both before npm test)");
const skip = toolSkip ?? (dendriteMissing ? `Dendrite v0.13.8 not built at ${DENDRITE_DIR}` : traefikMissing ? "Traefik not built (test/images/build-traefik.sh)" : undefined);

test("npm run bench -- --users 2 --seconds 5 completes and writes its JSON", { skip, timeout: 240_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), "hm-bench-test-"));
  try {
    const out = join(dir, "bench.json");
    const r = spawnSync(process.execPath, ["--import", "tsx", join(ROOT, "test/bench/bench.ts"), "--users", "2", "--seconds", "5", "--out", out], { cwd: ROOT, encoding: "utf8", timeout: 200_000 });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const j = JSON.parse(readFileSync(out, "utf8")) as {
      machine: { nproc: number; memoryMb: number; loadAverageAtStart: number[] };
      load: { users: number; messagesSent: number; deliveriesSeen: number };
      memoryMb: Record<string, Record<string, { rssMb: number; processes: number }>>;
      latencyMs: { sendToSync: Record<string, { n: number }> };
      programs: { dendrite: string };
    };
    assert.ok(j.machine.nproc > 0 && j.machine.memoryMb > 0 && j.machine.loadAverageAtStart.length === 3);
    assert.equal(j.load.users, 2);
    assert.match(j.programs.dendrite, /^v0\.13\.8 /);
    for (const p of ["postgres", "dendrite", "coturn", "traefik"]) {
      assert.ok(j.memoryMb.afterStartup[p].rssMb > 0 && j.memoryMb.afterStartup[p].processes > 0, `${p} measured after startup`);
      assert.ok(j.memoryMb.underLoadPeak[p].rssMb > 0, `${p} measured under load`);
    }
    assert.ok(j.memoryMb.afterStartup.postgres.processes > 1, "postgres: the postmaster and its backends");
    assert.ok(j.load.messagesSent > 0 && j.load.deliveriesSeen > 0, "messages went through");
    // One user talks through Traefik, one straight: each sees the other's messages.
    assert.ok(j.latencyMs.sendToSync["traefik->direct"].n > 0 && j.latencyMs.sendToSync["direct->traefik"].n > 0, JSON.stringify(j.latencyMs));
    assert.match(r.stdout, /send-to-sync \(ms\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
