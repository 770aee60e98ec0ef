import assert from "node:assert/strict";
import { settingsFor, problemsFor } from "./support/settings";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  renderBackupScript,
  renderDumpScript,
  renderFreshnessCheck,
  renderPgpass,
  renderRestoreScript,
  renderS3Credentials,
  retentionArgs,
} from "../components/render/backup";
import { findTool, skipReason } from "./support/realTool";

// The backup renderers judged by sh and shellcheck, and the backup settings as a stack file gives them.

const PARAMS = {
  host: "hm-test",
  spoolDir: "/spool",
  stateDir: "/state",
  mediaDir: "/data/dendrite/media",
  intervalSeconds: 21600,
  retrySeconds: 1800,
  retention: { daily: 7, weekly: 4, monthly: 6 },
  dumpTimeoutSeconds: 3600,
  answerTimeoutSeconds: 120,
};
const DUMP = { spoolDir: "/spool", stateDir: "/state", database: { host: "postgres", port: 5432, name: "dendrite", user: "dendrite" }, dumpTimeoutSeconds: 3600 };

const shellcheck = findTool("shellcheck", "shellcheck");

test("every rendered script passes shellcheck as POSIX sh", { skip: shellcheck ? undefined : skipReason("shellcheck", "shellcheck") }, () => {
  const dir = mkdtempSync(join(tmpdir(), "backup-sc-"));
  try {
    const scripts = {
      "backup.sh": renderBackupScript(PARAMS),
      "dump.sh": renderDumpScript(DUMP),
      "restore.sh": renderRestoreScript({ host: "hm-test", mediaDir: "/data/dendrite/media" }),
      "health.sh": renderFreshnessCheck("/state/last-success", "/state/started", 25200, "the last good backup"),
    };
    for (const [name, text] of Object.entries(scripts)) {
      writeFileSync(join(dir, name), text);
      const r = spawnSync(shellcheck!, ["-s", "sh", "-S", "style", join(dir, name)], { encoding: "utf8" });
      assert.equal(r.status, 0, `${name}:\n${r.stdout}${r.stderr}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the healthcheck fails once the last good backup is older than allowed, and counts from the start before the first", () => {
  const dir = mkdtempSync(join(tmpdir(), "backup-health-"));
  try {
    const script = join(dir, "health.sh");
    writeFileSync(script, renderFreshnessCheck(join(dir, "last"), join(dir, "started"), 100, "the last good backup"));
    const check = () => spawnSync("sh", [script], { encoding: "utf8" });
    const now = Math.floor(Date.now() / 1000);
    assert.notEqual(check().status, 0, "no marker at all");
    writeFileSync(join(dir, "started"), `${now - 10}\n`);
    assert.equal(check().status, 0, "within the first run's allowance");
    writeFileSync(join(dir, "started"), `${now - 500}\n`);
    assert.notEqual(check().status, 0, "the first run took too long");
    writeFileSync(join(dir, "last"), `${now - 50}\n`);
    assert.equal(check().status, 0, "a recent good backup");
    writeFileSync(join(dir, "last"), `${now - 101}\n`);
    const stale = check();
    assert.equal(stale.status, 1);
    assert.match(stale.stderr, /the last good backup: last at \d+, 10[1-9]s ago; allowed: 100s/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a healthcheck reading while the heartbeat or the last-success marker is written never sees an empty file", () => {
  // The rendered command that writes each marker (and the one-line functions it may use), run in a
  // tight loop against the rendered check: \`date >file\` truncates first, and a check in between reads "".
  const dir = mkdtempSync(join(tmpdir(), "backup-stamp-"));
  try {
    for (const [script, marker] of [[renderDumpScript({ ...DUMP, stateDir: dir }), "heartbeat"], [renderBackupScript({ ...PARAMS, stateDir: dir }), "last-success"]] as const) {
      const lines = script.split("\n");
      const write = lines.map((l) => l.trim()).find((l) => !l.startsWith("#") && l.endsWith(`"$state/${marker}"`));
      assert.ok(write, `the line that writes ${marker}`);
      const functions = lines.filter((l) => /^[a-z_]+\(\) \{ .* \}$/.test(l));
      const file = join(dir, marker);
      writeFileSync(file, `${Math.floor(Date.now() / 1000)}\n`);
      const check = join(dir, "check.sh");
      writeFileSync(check, renderFreshnessCheck(file, file, 60, marker));
      const writer = spawn("sh", ["-c", `state='${dir}'\n${functions.join("\n")}\nwhile :; do ${write}; done`], { stdio: "ignore" });
      try {
        const failed = Array.from({ length: 150 }, () => spawnSync("sh", [check], { encoding: "utf8" })).filter((r) => r.status !== 0);
        assert.deepEqual(failed.map((r) => r.stderr.trim()), [], `${marker}: checks failed while it was written by \`${write}\``);
      } finally {
        writer.kill("SIGKILL");
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("retention becomes restic forget flags; a kind kept 0 times is left out", () => {
  assert.deepEqual(retentionArgs({ daily: 7, weekly: 4, monthly: 6 }), ["--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "6"]);
  assert.deepEqual(retentionArgs({ daily: 3, weekly: 0, monthly: 0 }), ["--keep-daily", "3"]);
  assert.throws(() => retentionArgs({ daily: 0, weekly: 4, monthly: 6 }), /retention.daily/);
  assert.match(renderBackupScript(PARAMS), /restic forget --host "\$host" \$done_tags --keep-daily 7 --keep-weekly 4 --keep-monthly 6 --prune/);
});

test("the dump is pg_dump's plain, consistent, password-file-only dump into the FIFO, bounded in time", () => {
  const script = renderDumpScript(DUMP);
  assert.match(script, /timeout "\$dump_timeout" pg_dump --host='postgres' --port=5432 --username='dendrite' \\\n\s+--dbname='dendrite' --no-password --format=plain --no-owner --no-privileges --file="\$spool\/dump.fifo"/);
  assert.doesNotMatch(script, /PGPASSWORD|password=/i);
});

test("paths and names that could break out of the scripts' quoting are refused", () => {
  for (const bad of ["/spool'x", "spool", "/a/../b", "/a b", "/$(id)"]) {
    assert.throws(() => renderBackupScript({ ...PARAMS, spoolDir: bad }), /spoolDir/, bad);
    assert.throws(() => renderRestoreScript({ host: "h", mediaDir: bad }), /mediaDir/, bad);
  }
  assert.throws(() => renderBackupScript({ ...PARAMS, host: "a b" }), /host/);
  assert.throws(() => renderDumpScript({ ...DUMP, database: { ...DUMP.database, name: "x'; drop" } }), /database/);
  assert.throws(() => renderBackupScript({ ...PARAMS, intervalSeconds: 30 }), /intervalSeconds/);
});

test("secret files: pgpass escapes ':' and '\\\\', the S3 file is the AWS shared-credentials format", () => {
  assert.equal(renderPgpass({ host: "postgres", port: 5432, name: "dendrite", user: "dendrite", password: "a:b\\c" }), "postgres:5432:dendrite:dendrite:a\\:b\\\\c\n");
  assert.throws(() => renderPgpass({ host: "h", port: 1, name: "d", user: "u", password: "a\nb" }), /one line/);
  assert.equal(renderS3Credentials("AKID", "se/cr+et"), "[default]\naws_access_key_id = AKID\naws_secret_access_key = se/cr+et\n");
  assert.throws(() => renderS3Credentials("AKID", "two words"), /secretAccessKey/);
  assert.throws(() => renderS3Credentials("", "x"), /accessKeyId/);
});



const secure = { secure: "v1:placeholder" };

test("settings: backups are on by default for DigitalOcean (a Spaces bucket in the stack's region) and off for local", () => {
  assert.deepEqual(settingsFor("dev").backupPlan, { repository: { kind: "spaces", region: "fra1" }, intervalHours: 6, retention: { daily: 7, weekly: 4, monthly: 6 } });
  assert.equal(settingsFor("prod").backupPlan?.repository.kind, "spaces");
  assert.equal(settingsFor("local").backupPlan, undefined);
  assert.equal(settingsFor("dev", { "hardened-matrix:backup": "off" }).backupPlan, undefined);
});

test("settings: the local target backs up once a repository is named; an s3 repository needs both secret keys", () => {
  assert.deepEqual(settingsFor("local", { "hardened-matrix:backupRepository": "/srv/hm-backups" }).backupPlan?.repository, { kind: "path", path: "/srv/hm-backups" });
  const s3 = settingsFor("local", {
    "hardened-matrix:backupRepository": "s3:https://s3.example.net/hm-backups/matrix",
    "hardened-matrix:backupS3AccessKeyId": secure,
    "hardened-matrix:backupS3SecretAccessKey": secure,
  });
  assert.deepEqual(s3.backupPlan?.repository, { kind: "s3", url: "s3:https://s3.example.net/hm-backups/matrix" });
  assert.ok(s3.secrets.backupS3AccessKeyId && s3.secrets.backupS3SecretAccessKey);
  assert.equal("backupS3SecretAccessKey" in s3, false, "the secret stays out of the plain settings");
  assert.deepEqual(problemsFor("local", { "hardened-matrix:backupRepository": "s3:https://s3.example.net/hm-b", "hardened-matrix:backupS3AccessKeyId": secure }), [
    "hardened-matrix:backupS3SecretAccessKey: is missing; an s3: backupRepository needs both backupS3AccessKeyId and backupS3SecretAccessKey (set with --secret)",
  ]);
  assert.deepEqual(problemsFor("local", { "hardened-matrix:backupRepository": "s3:https://s3.example.net/hm-b", "hardened-matrix:backupS3AccessKeyId": "AKID", "hardened-matrix:backupS3SecretAccessKey": secure }), [
    "hardened-matrix:backupS3AccessKeyId: is a secret; set it with `pulumi config set --secret backupS3AccessKeyId ...`",
  ]);
});

test("settings: bad backup values are refused with the key named and what is allowed", () => {
  assert.deepEqual(problemsFor("local", { "hardened-matrix:backup": "yes" }), ['hardened-matrix:backup: "yes" Invalid option: expected one of "auto"|"on"|"off"']);
  assert.deepEqual(problemsFor("local", { "hardened-matrix:backup": "on" }), [
    'hardened-matrix:backupRepository: is required when backup is "on" for target "local" (an absolute path on this machine or s3:https://HOST/BUCKET)',
  ]);
  assert.deepEqual(problemsFor("local", { "hardened-matrix:backupRepository": "backups" }), [
    'hardened-matrix:backupRepository: "backups" is not a restic repository; allowed: s3:https://HOST/BUCKET[/PREFIX] or an absolute path',
  ]);
  assert.deepEqual(problemsFor("local", { "hardened-matrix:backupRepository": "s3:http://s3.example.net/hm-b" }).length, 1, "plain http is refused");
  assert.deepEqual(problemsFor("dev", { "hardened-matrix:backupRepository": "/srv/backups" }), [
    'hardened-matrix:backupRepository: "/srv/backups" is a path on the node, which is not off-site; allowed on digitalocean: empty (a Spaces bucket) or s3:https://HOST/BUCKET',
  ]);
  const [interval] = problemsFor("dev", { "hardened-matrix:backupIntervalHours": 48 });
  assert.match(interval!, /^hardened-matrix:backupIntervalHours: 48 .*24/);
  const [daily] = problemsFor("dev", { "hardened-matrix:backupKeepDaily": 0 });
  assert.match(daily!, /^hardened-matrix:backupKeepDaily: 0 .*1/);
  assert.deepEqual(problemsFor("dev", { "hardened-matrix:region": "nyc1" }), [
    'hardened-matrix:backupSpacesRegion: region "nyc1" has no Spaces; set backupSpacesRegion to one of nyc3, ams3, sfo2, sfo3, sgp1, lon1, fra1, tor1, blr1, syd1, atl1, or backupRepository',
  ]);
  assert.equal(settingsFor("dev", { "hardened-matrix:region": "nyc1", "hardened-matrix:backupSpacesRegion": "nyc3" }).backupPlan?.repository.kind, "spaces");
  assert.deepEqual(problemsFor("dev", { "hardened-matrix:backupSpacesRegion": "nyc1" }), [
    'hardened-matrix:backupSpacesRegion: "nyc1" is not a region with Spaces; allowed: nyc3, ams3, sfo2, sfo3, sgp1, lon1, fra1, tor1, blr1, syd1, atl1',
  ]);
  assert.deepEqual(problemsFor("local", { "hardened-matrix:backupSpacesRegion": "fra1" }), [
    'hardened-matrix:backupSpacesRegion: only applies to the Spaces bucket of target "digitalocean" with an empty backupRepository',
  ]);
});
