import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { hardenedService } from "../hardening";
import { overlayNetwork } from "./network";
import { postgresServerArgs, postgresTuning, renderPostgresInitScript, renderPostgresStartScript } from "../render/postgres";
import { configMount, secretMount, swarmConfig, swarmSecret } from "./swarmFiles";

/** The postgres user of the Alpine image. */
export const POSTGRES_USER = "70:70";
export const POSTGRES_SERVICE = "postgres";
export const POSTGRES_PORT = 5432;
const SUPERUSER_PASSWORD_FILE = "/run/secrets/postgres-superuser-password";
const APP_PASSWORD_FILE = "/run/secrets/dendrite-db-password";
const DATA_DIR = "/var/lib/postgresql/data";
// Not on a path the image uses; the image's entrypoint stays where it is and is called by this script.
const START_SCRIPT = "/usr/local/sbin/hm-postgres-start";

export interface PostgresArgs {
  image: pulumi.Input<string>;
  /** Memory of the node Postgres runs on; settings and limits are sized from it. */
  nodeMemoryMb: number;
  /** Persistent storage for the data directory (protected, retained). */
  storage: pulumi.Input<Omit<docker.types.input.ServiceTaskSpecContainerSpecMount, "target">>;
  constraints: string[];
  /** The application's database and role, created at first start. */
  database: string;
  role: string;
}

/**
 * Postgres for Dendrite: data on protected storage, passwords generated and delivered as Swarm
 * secret files, reachable only on an internal network shared with Dendrite, never published.
 */
export class Postgres extends pulumi.ComponentResource {
  /** Id of the internal network clients join. */
  readonly networkId: pulumi.Output<string>;
  readonly host: pulumi.Output<string>;
  readonly port: pulumi.Output<number>;
  readonly database: pulumi.Output<string>;
  readonly user: pulumi.Output<string>;
  readonly password: pulumi.Output<string>;
  readonly maxConnections: number;
  readonly service: docker.Service;

  constructor(name: string, args: PostgresArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:data:Postgres", name, {}, opts);
    const network = overlayNetwork(`${name}-net`, { networkName: "db", internal: true }, { parent: this });
    const superuserPassword = new random.RandomPassword(`${name}-superuser-password`, { length: 40, special: false }, { parent: this });
    const appPassword = new random.RandomPassword(`${name}-${args.role}-password`, { length: 40, special: false }, { parent: this });
    const superuserSecret = swarmSecret(`${name}-superuser-secret`, "postgres-superuser-password", superuserPassword.result, { parent: this });
    const appSecret = swarmSecret(`${name}-${args.role}-secret`, "dendrite-db-password", appPassword.result, { parent: this });
    const initScript = swarmConfig(
      `${name}-init`,
      "postgres-init",
      renderPostgresInitScript({ database: args.database, role: args.role, passwordFile: APP_PASSWORD_FILE }),
      { parent: this },
    );
    // Every start: the roles' passwords follow the secrets (a rotation changes the secret, which restarts the task).
    const startScript = swarmConfig(
      `${name}-start`,
      "postgres-start",
      renderPostgresStartScript({ role: args.role, passwordFile: APP_PASSWORD_FILE, superuserPasswordFile: SUPERUSER_PASSWORD_FILE }),
      { parent: this },
    );

    const tuning = postgresTuning(args.nodeMemoryMb * 1024 * 1024);
    const memoryLimitMb = Math.round(tuning.memoryLimitBytes / 1024 / 1024);
    this.service = hardenedService(
      `${name}-service`,
      {
        serviceName: POSTGRES_SERVICE,
        image: args.image,
        user: POSTGRES_USER,
        commands: [START_SCRIPT],
        args: ["postgres", ...postgresServerArgs(tuning)],
        env: { POSTGRES_PASSWORD_FILE: SUPERUSER_PASSWORD_FILE, PGDATA: `${DATA_DIR}/pgdata` },
        tmpfs: [
          // The socket directory and /tmp: tmpfs mounts are root-owned, so sticky and world-writable.
          { target: "/var/run/postgresql", sizeMb: 1, mode: 0o1777 },
          { target: "/tmp", sizeMb: 64, mode: 0o1777 },
          // Swarm has no --shm-size: a tmpfs sized for shared_buffers' dynamic segments.
          { target: "/dev/shm", sizeMb: Math.ceil(tuning.shmSizeBytes / 1024 / 1024), mode: 0o1777 },
        ],
        mounts: [pulumi.output(args.storage).apply((m) => ({ ...m, target: DATA_DIR, readOnly: false }))],
        secrets: [secretMount(superuserSecret, SUPERUSER_PASSWORD_FILE, POSTGRES_USER), secretMount(appSecret, APP_PASSWORD_FILE, POSTGRES_USER)],
        configs: [
          { ...configMount(initScript, "/docker-entrypoint-initdb.d/10-dendrite.sh", POSTGRES_USER), fileMode: 0o555 },
          { ...configMount(startScript, START_SCRIPT, POSTGRES_USER), fileMode: 0o555 },
        ],
        memoryLimitMb,
        memoryReservationMb: Math.round(tuning.memoryReservationBytes / 1024 / 1024),
        // pg_isready is a client program of the server build: docker-library/postgres
        // 17/alpine3.23/Dockerfile (PG_VERSION 17.9) configures --prefix=/usr/local and runs
        // `make install-world-bin`, so it is /usr/local/bin/pg_isready, on PATH.
        healthcheck: { test: ["pg_isready", "-q", "-h", "/var/run/postgresql", "-U", "postgres"], intervalSeconds: 10, startPeriodSeconds: 60 },
        networkIds: [network.id],
        aliases: [POSTGRES_SERVICE],
        constraints: args.constraints,
        updateOrder: "stop-first",
        // Lets Postgres finish a checkpoint on shutdown.
        stopGracePeriodSeconds: 60,
      },
      { parent: this },
    );
    this.networkId = network.id;
    this.host = pulumi.output(POSTGRES_SERVICE);
    this.port = pulumi.output(POSTGRES_PORT);
    this.database = pulumi.output(args.database);
    this.user = pulumi.output(args.role);
    // Known only once the service runs with it (convergeConfig: the update has completed, so the start
    // script has set the role's password): Dendrite's config and the backup, which take it from here,
    // change only after that, never before Postgres accepts the new password.
    this.password = pulumi.all([appPassword.result, this.service.id]).apply(([password]) => password);
    this.maxConnections = tuning.maxConnections;
    this.registerOutputs({ networkId: this.networkId, host: this.host, port: this.port, database: this.database, user: this.user, password: this.password });
  }
}
