import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { hardenedService } from "../hardening";
import {
  renderBackupScript,
  renderDumpScript,
  renderFreshnessCheck,
  renderPgpass,
  renderRestoreScript,
  renderS3Credentials,
  type Retention,
} from "../render/backup";
import { overlayNetwork } from "./network";
import { configMount, secretMount, swarmConfig, swarmSecret } from "./swarmFiles";

export const BACKUP_SERVICE = "backup";
export const DUMP_SERVICE = "backup-dump";
/** Where Dendrite's storage is mounted (read-only) in the backup container; the media store is its media/ (Dendrite's media_api.base_path). */
const DATA_DIR = "/data/dendrite";
export const MEDIA_DIR = `${DATA_DIR}/media`;
const SPOOL_DIR = "/spool";
const STATE_DIR = "/state";
const LOCAL_REPOSITORY_DIR = "/repository";
const PASSWORD_FILE = "/run/secrets/restic-password";
const S3_CREDENTIALS_FILE = "/run/secrets/s3-credentials";
const PGPASS_FILE = "/run/secrets/backup-pgpass";
const BACKUP_SCRIPT = "/usr/local/bin/hm-backup";
const DUMP_SCRIPT = "/usr/local/bin/hm-dump";
const HEALTH_SCRIPT = "/usr/local/bin/hm-health";
export const RESTORE_SCRIPT = "/usr/local/bin/hm-restore";
/** Named per node by Swarm; both containers of a node mount the same one (see `spoolMount`). */
export const SPOOL_VOLUME = "hardened-matrix-backup-spool";

export interface BackupArgs {
  /** restic/restic, pinned. */
  resticImage: pulumi.Input<string>;
  /** The image Postgres runs: its pg_dump has the server's major version. */
  postgresImage: pulumi.Input<string>;
  /** restic's --host for every snapshot (stable across tasks and nodes). */
  snapshotHost: string;
  /** An s3: URL; or a host path (local target) mounted as the repository. */
  repository: { url: pulumi.Input<string>; credentials: { accessKeyId: pulumi.Input<string>; secretAccessKey: pulumi.Input<string> } } | { hostPath: string };
  database: {
    host: pulumi.Input<string>;
    port: pulumi.Input<number>;
    name: pulumi.Input<string>;
    user: pulumi.Input<string>;
    password: pulumi.Input<string>;
    networkId: pulumi.Input<string>;
  };
  /** Dendrite's storage (the mount it gets), mounted read-only here. */
  dendriteStorage: pulumi.Input<Omit<docker.types.input.ServiceTaskSpecContainerSpecMount, "target">>;
  /** "uid:gid" owning Dendrite's files: both containers run as it, to read the media and share the spool. */
  user: string;
  intervalHours: number;
  retention: Retention;
  constraints: string[];
}

/**
 * The spool: a tmpfs-backed local volume, created by Swarm on the node on first use and shared by
 * the two containers there. Docker's local driver mounts `type`/`device`/`o` as given (moby
 * volume/local/local_unix.go) and mounts a volume once for all its users (volume/local/local.go,
 * `active.count`). It holds a FIFO and a few status files; nothing is written to disk. Checked here
 * with Debian's docker.io 20.10.24: two Swarm services with this mount on one node passed data through
 * a FIFO in it, the volume was owned 10002:10002 mode 700, and a container of another uid was refused.
 */
export function spoolMount(user: string): docker.types.input.ServiceTaskSpecContainerSpecMount {
  const [uid, gid] = user.split(":");
  return {
    type: "volume",
    source: SPOOL_VOLUME,
    target: SPOOL_DIR,
    volumeOptions: { driverName: "local", driverOptions: { type: "tmpfs", device: "tmpfs", o: `size=1m,mode=0700,uid=${uid},gid=${gid}` }, noCopy: true },
  };
}

/**
 * Scheduled, encrypted backups of Dendrite's database and media store (see components/render/backup.ts
 * for why two containers): `backup` (restic) runs the schedule, `backup-dump` (postgres image) streams
 * pg_dump on request. Both are placed with Postgres and Dendrite on the db node. The repository
 * password is generated here and kept in state; credentials reach the containers only as Swarm secrets.
 */
export class Backup extends pulumi.ComponentResource {
  readonly repository: pulumi.Output<string>;
  readonly repositoryPassword: pulumi.Output<string>;
  readonly backupService: docker.Service;
  readonly dumpService: docker.Service;

  constructor(name: string, args: BackupArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:backup:Backup", name, {}, opts);
    const child = { parent: this };
    const intervalSeconds = args.intervalHours * 3600;
    // A dump of a small homeserver takes minutes; hours mean something is stuck.
    const dumpTimeoutSeconds = Math.min(intervalSeconds, 4 * 3600);

    // Losing this password loses every backup: protected, and exported (secret) for the runbook.
    const password = new random.RandomPassword(`${name}-restic-password`, { length: 48, special: false }, { ...child, protect: true });
    const passwordSecret = swarmSecret(`${name}-restic-password`, "backup-restic-password", password.result, child);
    const pgpass = pulumi
      .all([args.database.host, args.database.port, args.database.name, args.database.user, args.database.password])
      .apply(([host, port, db, user, pw]) => renderPgpass({ host, port, name: db, user, password: pw }));
    const pgpassSecret = swarmSecret(`${name}-pgpass`, "backup-pgpass", pgpass, child);

    const database = pulumi.all([args.database.host, args.database.port, args.database.name, args.database.user]);
    const dumpScript = swarmConfig(
      `${name}-dump-script`,
      "backup-dump-script",
      database.apply(([host, port, db, user]) => renderDumpScript({ spoolDir: SPOOL_DIR, stateDir: STATE_DIR, database: { host, port, name: db, user }, dumpTimeoutSeconds })),
      child,
    );
    const backupScript = swarmConfig(
      `${name}-script`,
      "backup-script",
      renderBackupScript({
        host: args.snapshotHost,
        spoolDir: SPOOL_DIR,
        stateDir: STATE_DIR,
        mediaDir: MEDIA_DIR,
        intervalSeconds,
        retrySeconds: Math.min(intervalSeconds, 1800),
        retention: args.retention,
        dumpTimeoutSeconds,
        answerTimeoutSeconds: 120,
      }),
      child,
    );
    // Healthy while the last good backup is younger than one interval plus an hour for the run itself.
    const maxAgeSeconds = intervalSeconds + 3600;
    const backupHealth = swarmConfig(`${name}-health`, "backup-health", renderFreshnessCheck(`${STATE_DIR}/last-success`, `${STATE_DIR}/started`, maxAgeSeconds, "the last good backup"), child);
    // The dump loop's heartbeat, kept fresh while a dump runs too (up to dumpTimeoutSeconds): a long dump is not killed.
    const dumpHealth = swarmConfig(`${name}-dump-health`, "backup-dump-health", renderFreshnessCheck(`${STATE_DIR}/heartbeat`, `${STATE_DIR}/heartbeat`, 60, "the dump loop"), child);
    const restoreScript = swarmConfig(`${name}-restore-script`, "backup-restore", renderRestoreScript({ host: args.snapshotHost, mediaDir: MEDIA_DIR }), child);

    const executable = (config: docker.ServiceConfig, path: string): docker.types.input.ServiceTaskSpecContainerSpecConfig => ({
      ...configMount(config, path, args.user),
      fileMode: 0o555,
    });

    // restic reaches the repository; nothing else is on this network.
    const egress = overlayNetwork(`${name}-net`, { networkName: "backup", internal: false }, child);
    const repo = args.repository;
    const s3 = "url" in repo ? repo : undefined;
    const s3Secret = s3
      ? swarmSecret(
          `${name}-s3-credentials`,
          "backup-s3-credentials",
          pulumi.all([s3.credentials.accessKeyId, s3.credentials.secretAccessKey]).apply(([id, key]) => renderS3Credentials(id, key)),
          child,
        )
      : undefined;
    this.repository = s3 ? pulumi.output(s3.url) : pulumi.output(LOCAL_REPOSITORY_DIR);
    const repositoryMount: docker.types.input.ServiceTaskSpecContainerSpecMount[] =
      "hostPath" in repo ? [{ type: "bind", source: repo.hostPath, target: LOCAL_REPOSITORY_DIR, readOnly: false }] : [];

    this.backupService = hardenedService(
      `${name}-service`,
      {
        serviceName: BACKUP_SERVICE,
        image: args.resticImage,
        user: args.user,
        // The image's entrypoint runs restic; the schedule is our script.
        commands: ["/bin/sh", BACKUP_SCRIPT],
        env: {
          RESTIC_REPOSITORY: this.repository,
          RESTIC_PASSWORD_FILE: PASSWORD_FILE,
          ...(s3 ? { AWS_SHARED_CREDENTIALS_FILE: S3_CREDENTIALS_FILE } : {}),
          RESTIC_CACHE_DIR: "/cache",
          TMPDIR: "/tmp",
          HOME: "/tmp",
        },
        // tmpfs mounts are root-owned: sticky and world-writable, as for Postgres.
        tmpfs: [
          { target: STATE_DIR, sizeMb: 4, mode: 0o1777 },
          // restic's cache and its pack files in flight; both count against the memory limit.
          { target: "/cache", sizeMb: 256, mode: 0o1777 },
          { target: "/tmp", sizeMb: 192, mode: 0o1777 },
        ],
        mounts: [
          pulumi.output(args.dendriteStorage).apply((m) => ({ ...m, target: DATA_DIR, readOnly: true })),
          spoolMount(args.user),
          ...repositoryMount,
        ],
        secrets: [secretMount(passwordSecret, PASSWORD_FILE, args.user), ...(s3Secret ? [secretMount(s3Secret, S3_CREDENTIALS_FILE, args.user)] : [])],
        configs: [executable(backupScript, BACKUP_SCRIPT), executable(backupHealth, HEALTH_SCRIPT), executable(restoreScript, RESTORE_SCRIPT)],
        memoryLimitMb: 1024,
        memoryReservationMb: 64,
        healthcheck: { test: ["/bin/sh", HEALTH_SCRIPT], intervalSeconds: 60, retries: 3, startPeriodSeconds: 60 },
        networkIds: [egress.id],
        constraints: args.constraints,
        updateOrder: "stop-first",
        // Lets a running restic finish writing its current pack.
        stopGracePeriodSeconds: 60,
      },
      child,
    );

    this.dumpService = hardenedService(
      `${name}-dump-service`,
      {
        serviceName: DUMP_SERVICE,
        image: args.postgresImage,
        user: args.user,
        commands: ["/bin/sh", DUMP_SCRIPT],
        env: { PGPASSFILE: PGPASS_FILE, PGCONNECT_TIMEOUT: "30", HOME: "/tmp" },
        tmpfs: [
          { target: STATE_DIR, sizeMb: 1, mode: 0o1777 },
          { target: "/tmp", sizeMb: 16, mode: 0o1777 },
        ],
        mounts: [spoolMount(args.user)],
        // libpq refuses a password file readable by group or others; 0400 for its reader is what it wants.
        secrets: [secretMount(pgpassSecret, PGPASS_FILE, args.user)],
        configs: [executable(dumpScript, DUMP_SCRIPT), executable(dumpHealth, HEALTH_SCRIPT)],
        memoryLimitMb: 256,
        memoryReservationMb: 32,
        healthcheck: { test: ["/bin/sh", HEALTH_SCRIPT], intervalSeconds: 30, retries: 3, startPeriodSeconds: 30 },
        networkIds: [args.database.networkId],
        constraints: args.constraints,
        updateOrder: "stop-first",
      },
      child,
    );

    this.repositoryPassword = password.result;
    this.registerOutputs({ repository: this.repository, repositoryPassword: this.repositoryPassword });
  }
}
