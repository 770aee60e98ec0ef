import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { before, test } from "node:test";
import { roleConstraint } from "../components/platform/platform";
import { SPOOL_VOLUME } from "../components/services/backup";
import { isSecretLeaf } from "../plan/mockRuntime";
import { planStack, type Plan } from "../plan/plan";
import { planToDisk, ROOT, type PlanOnDisk } from "./support/plan";
import { named, ofType, plannedFile, raw, type Inputs } from "./support/planned";

// Backups through the real program: dev in this process (secrets visible to the test), the other
// stacks through the plan CLI in their own processes.
const BUCKET = "digitalocean:index/spacesBucket:SpacesBucket";
const KEY = "digitalocean:index/spacesKey:SpacesKey";
const SERVICE = "docker:index/service:Service";

let dev: Plan;
let local: PlanOnDisk;
let prod: PlanOnDisk;
let localWithPath: PlanOnDisk;

before(async () => {
  dev = await planStack("dev");
  assert.equal(dev.error, undefined, String(dev.error));
  local = planToDisk("local");
  prod = planToDisk("prod");
  const dir = mkdtempSync(path.join(tmpdir(), "hm-backup-cfg-"));
  copyFileSync(path.join(ROOT, "Pulumi.yaml"), path.join(dir, "Pulumi.yaml"));
  writeFileSync(path.join(dir, "Pulumi.local.yaml"), `${readFileSync(path.join(ROOT, "Pulumi.local.yaml"), "utf8")}  hardened-matrix:backupRepository: /srv/hm-backups\n`);
  localWithPath = planToDisk("local", ["--config-dir", dir]);
});

const service = (plan: { resources: Plan["resources"] }, name: string): Inputs | undefined =>
  ofType(plan, SERVICE).map((r) => r.inputs as Inputs).find((s) => s.name === name);

test("dev: a private, versioned Spaces bucket that outlives the stack, and a key that can use that bucket only", () => {
  const [bucket] = ofType(dev, BUCKET);
  assert.ok(bucket);
  const b = bucket.inputs as Inputs;
  assert.equal(b.acl, "private");
  assert.equal(b.region, "fra1");
  assert.equal(b.forceDestroy, false);
  assert.deepEqual(b.versioning, { enabled: true });
  assert.ok(bucket.options.protect && bucket.options.retainOnDelete, "the bucket is protected and retained");
  const [key] = ofType(dev, KEY);
  assert.ok(key);
  assert.deepEqual((key.inputs as Inputs).grants, [{ bucket: b.name, permission: "readwrite" }]);
  assert.equal(dev.outputs.backupRepository, `s3:https://fra1.digitaloceanspaces.com/${b.name}`);
  for (const out of ["backupRepositoryPassword", "backupS3AccessKeyId", "backupS3SecretAccessKey"]) assert.ok(isSecretLeaf(dev.outputs[out]), out);
  // The password that opens every backup is protected in state.
  assert.ok(named(dev, "backup-restic-password").options.protect);
});

test("dev: the repository password, the S3 key and the database password reach the containers only as Swarm secret files", () => {
  const password = plannedFile(dev, "backup-restic-password/restic-password");
  const dbPassword = plannedFile(dev, "postgres-dendrite-secret/dendrite-db-password");
  assert.ok(password.length >= 40 && dbPassword.length >= 40);
  assert.equal(plannedFile(dev, "backup-pgpass/backup-pgpass"), `postgres:5432:dendrite:dendrite:${dbPassword}\n`);
  const s3File = plannedFile(dev, "backup-s3-credentials/s3-credentials");
  const s3 = /^\[default\]\naws_access_key_id = (DO00\w+)\naws_secret_access_key = (\w+)\n$/.exec(s3File);
  assert.ok(s3, s3File);
  for (const name of ["backup", "backup-dump"]) {
    const r = ofType(dev, SERVICE).find((x) => (x.inputs as Inputs).name === name)!;
    const rawService = JSON.stringify(raw(dev, r));
    for (const secret of [password, dbPassword, s3[2]!]) {
      assert.equal(rawService.includes(secret), false, `${name}: a credential in the service spec (env, labels or args)`);
    }
  }
  const backup = service(dev, "backup")!;
  const c = backup.taskSpec.containerSpec;
  assert.deepEqual(
    c.secrets.map((s: Inputs) => [s.fileName, s.fileMode]).sort(),
    [["/run/secrets/restic-password", 0o400], ["/run/secrets/s3-credentials", 0o400]],
  );
  assert.equal(c.env.RESTIC_PASSWORD_FILE, "/run/secrets/restic-password");
  assert.equal(c.env.AWS_SHARED_CREDENTIALS_FILE, "/run/secrets/s3-credentials");
  const dump = service(dev, "backup-dump")!.taskSpec.containerSpec;
  assert.deepEqual(dump.secrets.map((s: Inputs) => s.fileName), ["/run/secrets/backup-pgpass"]);
  assert.equal(dump.env.PGPASSFILE, "/run/secrets/backup-pgpass");
});

test("dev: both containers are hardened, placed on the db node, and only read Dendrite's storage", () => {
  const postgres = service(dev, "postgres")!;
  const dendrite = service(dev, "dendrite")!;
  for (const name of ["backup", "backup-dump"]) {
    const s = service(dev, name)!;
    const c = s.taskSpec.containerSpec;
    assert.equal(c.user, "10002:10002", name);
    assert.equal(c.readOnly, true, name);
    assert.deepEqual(c.capDrops, ["ALL"], name);
    assert.deepEqual(c.capAdds, [], name);
    assert.ok(s.taskSpec.resources.limits.memoryBytes > 0, name);
    assert.match(c.healthcheck.tests.join(" "), /^CMD \/bin\/sh \/usr\/local\/bin\/hm-health$/, name);
    assert.deepEqual(s.taskSpec.placement.constraints, [roleConstraint("db")], name);
    assert.deepEqual(s.labels, [], `${name}: no labels, no exceptions`);
    assert.equal(s.endpointSpec, undefined, `${name}: publishes nothing`);
    assert.equal(JSON.stringify(c.mounts).includes("docker.sock"), false, `${name}: no Docker socket`);
    const spool = c.mounts.find((m: Inputs) => m.target === "/spool");
    assert.equal(spool.source, SPOOL_VOLUME);
    assert.equal(spool.volumeOptions.driverOptions.type, "tmpfs", "the FIFO's spool never touches a disk");
  }
  const backup = service(dev, "backup")!.taskSpec.containerSpec;
  assert.equal(backup.image, "restic/restic:0.19.1");
  const media = backup.mounts.find((m: Inputs) => m.target === "/data/dendrite");
  const dendriteData = dendrite.taskSpec.containerSpec.mounts.find((m: Inputs) => m.target === "/var/dendrite");
  assert.equal(media.source, dendriteData.source, "the same storage Dendrite writes");
  assert.equal(media.readOnly, true);
  // pg_dump comes from the very image the server runs: same major version.
  assert.equal(service(dev, "backup-dump")!.taskSpec.containerSpec.image, postgres.taskSpec.containerSpec.image);
  // The dump side talks only to Postgres; the restic side has no way to the database.
  const networkId = (name: string): string => ofType(dev, "docker:index/network:Network").find((n) => (n.inputs as Inputs).name === name)!.id!;
  const attached = (name: string): string[] => service(dev, name)!.taskSpec.networksAdvanceds.map((n: Inputs) => n.id);
  assert.deepEqual(attached("backup-dump"), [networkId("db")]);
  assert.deepEqual(attached("backup"), [networkId("backup")]);
  assert.equal((ofType(dev, "docker:index/network:Network").find((n) => (n.inputs as Inputs).name === "backup")!.inputs as Inputs).internal, false, "restic reaches the S3 endpoint");
  assert.match(plannedFile(dev, "backup-script/hm-backup"), /--keep-daily 7 --keep-weekly 4 --keep-monthly 6 --prune/);
  assert.match(plannedFile(dev, "backup-script/hm-backup"), /^interval=21600$/m);
});

test("dev: the cost estimate counts the Spaces subscription", () => {
  // One s-1vcpu-2gb (12) + 31 GiB of volumes (3.10) + Spaces (5).
  assert.equal(dev.outputs.estimatedMonthlyCostUsd, 20.1);
});

test("prod: the backup runs on the db node, next to the storage it reads", () => {
  const backup = service(prod, "backup")!;
  assert.deepEqual(backup.taskSpec.placement.constraints, [roleConstraint("db")]);
  const media = backup.taskSpec.containerSpec.mounts.find((m: Inputs) => m.target === "/data/dendrite");
  assert.equal(media.source, "/mnt/hm-prod-dendrite/dendrite");
  assert.equal(ofType(prod, BUCKET).length, 1);
});

test("local: nothing is planned for backups unless a repository is configured", () => {
  assert.equal(service(local, "backup"), undefined);
  assert.equal(service(local, "backup-dump"), undefined);
  assert.equal(ofType(local, BUCKET).length + ofType(local, KEY).length, 0);
  assert.equal([...local.files.keys()].some((f) => f.startsWith("backup")), false);
  assert.equal("backupRepository" in local.outputs, false);
});

test("local with backupRepository: the path is the repository, mounted into the restic container only", () => {
  const backup = service(localWithPath, "backup")!.taskSpec.containerSpec;
  assert.deepEqual(backup.mounts.find((m: Inputs) => m.target === "/repository"), { type: "bind", source: "/srv/hm-backups", target: "/repository", readOnly: false });
  assert.equal(backup.env.RESTIC_REPOSITORY, "/repository");
  assert.equal(backup.env.AWS_SHARED_CREDENTIALS_FILE, undefined);
  assert.equal(ofType(localWithPath, BUCKET).length, 0);
  assert.equal(service(localWithPath, "backup-dump")!.taskSpec.containerSpec.mounts.some((m: Inputs) => m.target === "/repository"), false);
  assert.equal(localWithPath.outputs.backupRepository, "/repository");
});
