import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { TAG_DATABASE, TAG_MEDIA } from "../components/render/backup";
import { backupTarget, runChecks, type BackupTarget, type CheckResult } from "../ops/check";
import { findTools } from "./support/realTool";

// The self-check's backup freshness (`npm run check -- --backup`) judged by the real restic (Debian's)
// on real repositories: snapshots made as the backup service makes them (its tags and --host), with
// restic's own --time to place one in the past.

const { tools, skip } = findTools({ restic: ["restic", "restic"] });
const work = mkdtempSync(path.join(tmpdir(), "hm-check-backup-"));
after(() => rmSync(work, { recursive: true, force: true }));

const PASSWORD = "correct horse battery staple";

function repo(name: string): string {
  const dir = path.join(work, name);
  execFileSync(tools.restic!, ["init", "--repo", dir], { input: `${PASSWORD}\n${PASSWORD}\n`, stdio: ["pipe", "ignore", "pipe"] });
  return dir;
}

function snapshot(dir: string, tag: string, time?: Date): void {
  const at = time ? ["--time", time.toISOString().replace("T", " ").slice(0, 19)] : [];
  execFileSync(tools.restic!, ["backup", "--repo", dir, "--no-cache", "--host", "hm", "--tag", tag, "--stdin", "--stdin-filename", `${tag}.dump`, ...at], {
    input: "a dump\n",
    stdio: ["pipe", "ignore", "pipe"],
    // The test's own repository: its password in the environment, stdin is the "dump".
    env: { PATH: process.env.PATH ?? "", HOME: work, RESTIC_PASSWORD: PASSWORD, TZ: "UTC" },
  });
}

async function freshness(b: Partial<BackupTarget> & { repository: string }): Promise<CheckResult> {
  const rs = await runChecks({
    clientUrl: "http://127.0.0.1:9",
    serverName: "matrix.invalid",
    federation: { mode: "closed" },
    turnUris: [],
    timeoutMs: 1000,
    backup: { password: PASSWORD, intervalHours: 6, restic: tools.restic!, ...b },
  });
  return rs.find((r) => r.name === "backup freshness") ?? assert.fail("no backup freshness check");
}

describe("self-check: backup freshness with the real restic", { skip }, () => {
  test("a database snapshot within the interval plus an hour passes, and says how old the media snapshot is", async () => {
    const dir = repo("fresh");
    snapshot(dir, TAG_DATABASE, new Date(Date.now() - 2 * 3_600_000));
    snapshot(dir, TAG_MEDIA);
    const r = await freshness({ repository: dir });
    assert.equal(r.status, "ok", JSON.stringify(r));
    assert.match(r.detail, /^database [0-9a-f]{8} 2\.0 h old \(limit 7 h\); media [0-9a-f]{8} 0\.0 h old$/);
  });

  test("only a stale database snapshot (older than the interval plus an hour) fails, naming its age", async () => {
    const dir = repo("stale");
    snapshot(dir, TAG_DATABASE, new Date(Date.now() - 10 * 3_600_000));
    snapshot(dir, TAG_MEDIA); // a fresh media snapshot does not make up for a stale database
    const r = await freshness({ repository: dir });
    assert.equal(r.status, "failed", JSON.stringify(r));
    assert.match(r.detail, /newest database snapshot \([0-9a-f]{8}\) is 10\.0 h old, more than the interval plus an hour \(7 h\)/);
    assert.match(r.fix ?? "", /docker service logs backup/);
    // A longer interval accepts the same snapshot.
    assert.equal((await freshness({ repository: dir, intervalHours: 12 })).status, "ok");
  });

  test("a repository with no database snapshot fails", async () => {
    const r = await freshness({ repository: repo("empty") });
    assert.equal(r.status, "failed");
    assert.match(r.detail, /no database snapshot/);
  });

  test("a wrong password fails and says which output holds the right one", async () => {
    const dir = repo("pw");
    snapshot(dir, TAG_DATABASE);
    const r = await freshness({ repository: dir, password: "not it" });
    assert.equal(r.status, "failed", JSON.stringify(r));
    assert.match(r.fix ?? "", /backupRepositoryPassword/);
  });

  test("without restic the check skips and says to install it; without --backup it is not asked", async () => {
    const r = await freshness({ repository: path.join(work, "none"), restic: path.join(work, "no-restic") });
    assert.equal(r.status, "skipped");
    assert.match(r.detail, /install restic/);
    const rs = await runChecks({ clientUrl: "http://127.0.0.1:9", serverName: "x.invalid", federation: { mode: "closed" }, turnUris: [], timeoutMs: 1000 });
    assert.equal(rs.find((x) => x.name === "backup freshness")?.status, "skipped");
  });

  test("the repository comes from the stack's outputs, read with secrets shown; masked or missing outputs are refused", () => {
    const outputs = { backupRepository: "s3:https://s3.example/b/hm", backupRepositoryPassword: "pw", backupS3AccessKeyId: "AK", backupS3SecretAccessKey: "SK" };
    assert.deepEqual(backupTarget(outputs, 6), { repository: "s3:https://s3.example/b/hm", password: "pw", intervalHours: 6, s3: { accessKeyId: "AK", secretAccessKey: "SK" } });
    assert.throws(() => backupTarget({ ...outputs, backupRepositoryPassword: "[secret]" }, 6), /--show-secrets/);
    assert.throws(() => backupTarget({}, 6), /backups off/);
  });
});
