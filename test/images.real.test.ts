import assert from "node:assert/strict";
import { chownSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { postgresServerArgs, postgresTuning, renderPostgresInitScript, renderPostgresStartScript } from "../components/render/postgres";
import { COTURN_USER } from "../components/services/coturn";
import { DENDRITE_USER } from "../components/services/dendrite";
import { POSTGRES_USER } from "../components/services/postgres";
import { SOCKET_PROXY_API, SOCKET_PROXY_RUN_DIR, SOCKET_PROXY_START } from "../components/services/socketProxy";
import { TRAEFIK_USER } from "../components/services/traefik";
import { TURN_CERT_USER } from "../components/services/turnCert";
import { DEFAULT_IMAGES, type ImageName } from "../components/settings";
import { loadImages, type StandInImage } from "./images/images";
import { clusterSkipReason, NetnsCluster, type ClusterNode } from "./support/netnsCluster";

// The stand-in images (test/images/build-images.sh), judged by a real Docker engine (one Debian
// dockerd in a network namespace of its own, test/support/netnsCluster.ts): each image's user,
// entrypoint, workdir and volumes as its upstream image has them (evidence next to each row), and
// the program inside running the way our services run it: read-only root, every capability dropped,
// no new privileges, as the uid:gid the program renders, with the service's tmpfs mounts.

const skip = clusterSkipReason();

/** What the upstream image declares (its Dockerfile, named in test/images/<name>/Dockerfile). */
const UPSTREAM: Partial<Record<ImageName, { user: string; entrypoint: string[]; cmd?: string[]; workdir: string; volumes: string[]; env?: Record<string, string> }>> = {
  // docker-library/postgres 17/alpine3.23/Dockerfile: no USER, ENTRYPOINT docker-entrypoint.sh, CMD postgres, VOLUME and PGDATA.
  postgres: { user: "", entrypoint: ["docker-entrypoint.sh"], cmd: ["postgres"], workdir: "", volumes: ["/var/lib/postgresql/data"], env: { PGDATA: "/var/lib/postgresql/data" } },
  // coturn/coturn docker/coturn/debian/Dockerfile: USER nobody:nogroup, VOLUME /var/lib/coturn.
  coturn: { user: "nobody:nogroup", entrypoint: ["docker-entrypoint.sh"], workdir: "", volumes: ["/var/lib/coturn"] },
  // linuxserver/docker-socket-proxy 3.4.3-r0-ls91 Dockerfile: no USER, ENTRYPOINT /docker-entrypoint.sh, section defaults.
  socketProxy: { user: "", entrypoint: ["/docker-entrypoint.sh"], workdir: "", volumes: [], env: { SOCKET_PATH: "/var/run/docker.sock", EVENTS: "1", PING: "1", VERSION: "1", POST: "0" } },
  // restic/restic docker/Dockerfile.release v0.19.1: no USER, ENTRYPOINT /usr/bin/restic.
  restic: { user: "", entrypoint: ["/usr/bin/restic"], workdir: "", volumes: [] },
  // go-acme/lego buildx.Dockerfile v4.35.2: ENTRYPOINT /lego.
  lego: { user: "", entrypoint: ["/lego"], workdir: "", volumes: [] },
  // nodejs/docker-node 24/alpine3.24/Dockerfile: ENTRYPOINT docker-entrypoint.sh, CMD node (user node exists, not set).
  federationGate: { user: "", entrypoint: ["docker-entrypoint.sh"], cmd: ["node"], workdir: "", volumes: [] },
  // matrix-org/dendrite Dockerfile v0.13.8 = element-hq/dendrite v0.15.2 final stage: VOLUME/WORKDIR /etc/dendrite.
  dendrite: { user: "", entrypoint: ["/usr/bin/dendrite"], workdir: "/etc/dendrite", volumes: ["/etc/dendrite"] },
};

/** Users the upstream images define: name, uid, gid (evidence in each recipe's Dockerfile). */
const PASSWD: Partial<Record<ImageName, [string, number, number]>> = {
  postgres: ["postgres", 70, 70],
  coturn: ["nobody", 65534, 65534],
  federationGate: ["node", 1000, 1000],
};

const HARDENED = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"];

describe("the stand-in images, judged by a real engine", { skip, timeout: 3_600_000 }, () => {
  let cluster: NetnsCluster;
  let n1: ClusterNode;
  let images: StandInImage[] = [];
  let work = "";
  const available = (name: ImageName): boolean => images.some((i) => i.name === name && i.archive !== undefined);
  const image = (name: ImageName): string => DEFAULT_IMAGES[name];

  before(async () => {
    cluster = await NetnsCluster.create({ nodes: [{ name: "n1", vpcAddress: "10.110.0.2/24" }], lifetimeSeconds: 2400 });
    await cluster.startEngines();
    n1 = cluster.node("n1");
    images = await loadImages(n1.dockerHost);
    work = mkdtempSync(path.join(tmpdir(), "hm-images-test-"));
  });

  after(() => {
    if (work) rmSync(work, { recursive: true, force: true });
    if (!cluster) return;
    cluster.teardown();
    assert.deepEqual(cluster.leftovers(), [], "teardown leaves nothing behind");
  });

  const docker = async (args: string[], timeoutMs = 120_000): Promise<{ code: number; out: string; stdout: string }> => {
    const r = await n1.docker(args, { timeoutMs });
    return { code: r.code ?? -1, out: `${r.stdout}${r.stderr}`, stdout: r.stdout };
  };
  const run = (args: string[]) => docker(["run", "--rm", "--network", "none", ...args]);

  test("every image the program pins is built, or its absence is said (traefik: another recipe)", () => {
    for (const name of Object.keys(UPSTREAM) as ImageName[]) assert.ok(available(name), `${name} (${image(name)}) was not built: ${JSON.stringify(images)}`);
  });

  for (const name of Object.keys(UPSTREAM) as ImageName[]) {
    test(`${name}: user, entrypoint, workdir, volumes and environment as upstream`, async () => {
      const u = UPSTREAM[name]!;
      const r = await docker(["image", "inspect", "--format", "{{json .Config}}", image(name)]);
      assert.equal(r.code, 0, r.out);
      const c = JSON.parse(r.stdout) as { User: string; Entrypoint: string[] | null; Cmd: string[] | null; WorkingDir: string; Volumes: Record<string, object> | null; Env: string[] };
      assert.equal(c.User, u.user);
      assert.deepEqual(c.Entrypoint, u.entrypoint);
      if (u.cmd) assert.deepEqual(c.Cmd, u.cmd);
      assert.equal(c.WorkingDir, u.workdir);
      assert.deepEqual(Object.keys(c.Volumes ?? {}).sort(), u.volumes);
      const env = Object.fromEntries(c.Env.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
      for (const [k, v] of Object.entries(u.env ?? {})) assert.equal(env[k], v, k);
      const pw = PASSWD[name];
      if (pw) {
        const id = await run(["--entrypoint", "id", image(name), pw[0]]);
        assert.equal(id.code, 0, id.out);
        assert.match(id.stdout, new RegExp(`^uid=${pw[1]}\\(${pw[0]}\\) gid=${pw[2]}\\(`));
      }
    });
  }

  test("postgres: its directories as upstream (PGDATA and the socket directory owned by 70, 1777/3777)", async () => {
    const r = await run(["--entrypoint", "stat", image("postgres"), "-c", "%n %u:%g %a", "/var/lib/postgresql", "/var/lib/postgresql/data", "/var/run/postgresql", "/docker-entrypoint-initdb.d"]);
    assert.equal(r.code, 0, r.out);
    assert.deepEqual(r.stdout.trim().split("\n"), [
      "/var/lib/postgresql 70:70 1777",
      "/var/lib/postgresql/data 70:70 1777",
      "/var/run/postgresql 70:70 3777",
      "/docker-entrypoint-initdb.d 0:0 755",
    ]);
  });

  test("postgres: initialises through the program's own start and init scripts, hardened, and the roles log in with the passwords from their _FILE secrets", async () => {
    // The files the service mounts (components/services/postgres.ts), rendered by the program.
    const dir = path.join(work, "pg");
    const file = (name: string, content: string, mode: number) => {
      const p = path.join(work, name);
      writeFileSync(p, content, { mode });
      chownSync(p, 70, 70);
      return p;
    };
    rmSync(dir, { recursive: true, force: true });
    const superPw = "s".repeat(20) + "Super4Secret";
    const appPw = "a".repeat(20) + "App4Secret";
    const superFile = file("super", superPw, 0o400);
    const appFile = file("app", appPw, 0o400);
    const init = file("init.sh", renderPostgresInitScript({ database: "dendrite", role: "dendrite", passwordFile: "/run/secrets/dendrite-db-password" }), 0o555);
    const start = file(
      "start.sh",
      renderPostgresStartScript({ role: "dendrite", passwordFile: "/run/secrets/dendrite-db-password", superuserPasswordFile: "/run/secrets/postgres-superuser-password" }),
      0o555,
    );
    const tuning = postgresTuning(1024 * 1024 * 1024);
    const volume = `hm-pg-${process.pid}`;
    // Clients connect over a network, as Dendrite does: inside the container 127.0.0.1 is trusted
    // (initdb's default pg_hba.conf, which upstream's image keeps too).
    assert.equal((await docker(["network", "create", "--internal", "hm-pg-net"])).code, 0);
    const c = await docker([
      "run", "-d", "--name", "hm-pg", "--network", "hm-pg-net", ...HARDENED, "--user", POSTGRES_USER,
      "--tmpfs", "/var/run/postgresql:mode=1777,size=1m", "--tmpfs", "/tmp:mode=1777,size=64m", "--tmpfs", `/dev/shm:mode=1777,size=${Math.ceil(tuning.shmSizeBytes / 1048576)}m`,
      "--mount", `type=volume,source=${volume},target=/var/lib/postgresql/data`,
      "-v", `${superFile}:/run/secrets/postgres-superuser-password:ro`, "-v", `${appFile}:/run/secrets/dendrite-db-password:ro`,
      "-v", `${init}:/docker-entrypoint-initdb.d/10-dendrite.sh:ro`, "-v", `${start}:/usr/local/sbin/hm-postgres-start:ro`,
      "-e", "POSTGRES_PASSWORD_FILE=/run/secrets/postgres-superuser-password", "-e", "PGDATA=/var/lib/postgresql/data/pgdata",
      "--entrypoint", "/usr/local/sbin/hm-postgres-start", image("postgres"), "postgres", ...postgresServerArgs(tuning),
    ]);
    assert.equal(c.code, 0, c.out);
    try {
      const psql = (conninfo: string) =>
        docker(["run", "--rm", "--network", "hm-pg-net", ...HARDENED, "--user", "65534:65534", "--entrypoint", "psql", image("postgres"), conninfo, "-tAc", "SELECT current_user || ' ' || current_database()"]);
      let ok = { code: -1, out: "", stdout: "" };
      for (let i = 0; i < 120; i++) {
        ok = await psql(`host=hm-pg user=dendrite dbname=dendrite password=${appPw}`);
        if (ok.code === 0) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
      assert.equal(ok.code, 0, `${ok.out}\n${(await docker(["logs", "hm-pg"])).out}`);
      assert.equal(ok.stdout.trim(), "dendrite dendrite");
      const su = await psql(`host=hm-pg user=postgres dbname=postgres password=${superPw}`);
      assert.equal(su.stdout.trim(), "postgres postgres", su.out);
      const wrong = await psql(`host=hm-pg user=dendrite dbname=dendrite password=wrong${appPw}`);
      assert.notEqual(wrong.code, 0);
      assert.match(wrong.out, /password authentication failed for user "dendrite"/);
      const healthy = await docker(["exec", "hm-pg", "pg_isready", "-q", "-h", "/var/run/postgresql", "-U", "postgres"]);
      assert.equal(healthy.code, 0, healthy.out);
      // A rotation: the secret changes and the task restarts; the program's start script, through
      // the image's pg_ctl and psql, sets the new password before the server listens.
      const rotated = "r".repeat(20) + "Rotated4Secret";
      writeFileSync(appFile, rotated);
      assert.equal((await docker(["restart", "-t", "30", "hm-pg"], 180_000)).code, 0);
      let after = { code: -1, out: "", stdout: "" };
      for (let i = 0; i < 120; i++) {
        after = await psql(`host=hm-pg user=dendrite dbname=dendrite password=${rotated}`);
        if (after.code === 0) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
      assert.equal(after.stdout.trim(), "dendrite dendrite", `${after.out}\n${(await docker(["logs", "hm-pg"])).out}`);
      assert.notEqual((await psql(`host=hm-pg user=dendrite dbname=dendrite password=${appPw}`)).code, 0, "the old password no longer works");
      const logs = await docker(["logs", "hm-pg"]);
      assert.match(logs.out, /created role dendrite and database dendrite/);
      assert.match(logs.out, /PostgreSQL init process complete; ready for start up/);
      assert.match(logs.out, /passwords of postgres and dendrite set from their secrets/);
      for (const pw of [appPw, superPw, rotated]) assert.ok(!logs.out.includes(pw), "no password in the log");
    } finally {
      await docker(["rm", "-f", "hm-pg"]);
      await docker(["volume", "rm", "-f", volume]);
      await docker(["network", "rm", "hm-pg-net"]);
    }
  });

  test("coturn: turnserver runs as 65534 with NET_BIND_SERVICE alone (its file capability), and not without it", async () => {
    // As components/services/coturn.ts: cap-drop ALL, cap-add NET_BIND_SERVICE, read-only, tmpfs.
    const base = ["--read-only", "--cap-drop", "ALL", "--user", COTURN_USER, "--tmpfs", "/var/tmp:mode=1777", "--tmpfs", "/var/lib/coturn:mode=1777", "--tmpfs", "/tmp:mode=1777"];
    const ok = await run([...base, "--cap-add", "NET_BIND_SERVICE", "--entrypoint", "turnserver", image("coturn"), "--version"]);
    assert.equal(ok.code, 0, ok.out);
    assert.match(ok.out, /^4\.6\.1/m);
    const without = await run([...base, "--entrypoint", "turnserver", image("coturn"), "--version"]);
    assert.notEqual(without.code, 0, "exec of a binary with a file capability outside the bounding set fails");
    const stun = await run([...base, "--cap-add", "NET_BIND_SERVICE", "--entrypoint", "sh", image("coturn"), "-c", "command -v turnutils_stunclient"]);
    assert.equal(stun.stdout.trim(), "/usr/bin/turnutils_stunclient", stun.out);
  });

  /** The socket proxy as the service runs it (components/services/socketProxy.ts), as `user`; its answers to Traefik's reads and to what must stay closed. */
  const socketProxy = async (user: string): Promise<void> => {
    const env = Object.entries({ ...SOCKET_PROXY_API, LOG_LEVEL: "info" }).flatMap(([k, v]) => ["-e", `${k}=${v}`]);
    const c = await docker([
      "run", "-d", "--name", "hm-sp", "--network", "none", ...HARDENED, "--user", user,
      // The service's one tmpfs and its start command (components/services/socketProxy.ts).
      "--mount", `type=tmpfs,destination=${SOCKET_PROXY_RUN_DIR},tmpfs-mode=1777,tmpfs-size=8388608`,
      "-v", `${n1.sock}:/var/run/docker.sock:ro`, ...env, "--entrypoint", "/bin/sh", image("socketProxy"), "-c", SOCKET_PROXY_START,
    ]);
    assert.equal(c.code, 0, c.out);
    try {
      const get = async (p: string, method = "GET") => {
        let r = { code: -1, out: "", stdout: "" };
        for (let i = 0; i < 30; i++) {
          r = await docker(["exec", "hm-sp", "wget", "-q", "-S", "-O", "/dev/null", ...(method === "POST" ? ["--post-data="] : []), `http://127.0.0.1:2375${p}`]);
          if (!/Connection refused/.test(r.out)) break;
          await new Promise((res) => setTimeout(res, 500));
        }
        return r;
      };
      // The service's healthcheck, then what Traefik reads, then what it must not.
      assert.equal((await get("/_ping")).code, 0, (await docker(["logs", "hm-sp"])).out);
      assert.equal((await get("/v1.41/version")).code, 0);
      // Passed to the engine, which answers itself (503: this engine is not a swarm manager).
      const services = await get("/v1.41/services");
      assert.match(services.out, /HTTP\/1\.[01] (200|503) /, services.out);
      for (const p of ["/v1.41/containers/json", "/v1.41/info", "/v1.41/secrets", "/v1.41/events"]) assert.match((await get(p)).out, /403 Forbidden/, p);
      assert.match((await get("/v1.41/services/create", "POST")).out, /403 Forbidden/);
    } finally {
      await docker(["rm", "-f", "hm-sp"]);
    }
  };

  test("socketProxy: HAProxy with the program's settings passes Traefik's reads and refuses the rest (as root, capabilities dropped)", async () => {
    await socketProxy("0:0");
  });

  // runc before 1.1.8 gives a tmpfs mounted on a directory the image has that directory's mode
  // (opencontainers/runc#3911); Debian 12's runc is 1.1.5, as on the droplets. With the service's
  // former tmpfs at /run (0755 root as in the image) HAProxy as 65534 could write neither
  // /run/haproxy nor /run/haproxy.pid; the service now mounts its tmpfs where the image has nothing.
  test("socketProxy: starts as nobody in the socket's group with the service's tmpfs and command", async () => {
    await socketProxy(`65534:${statSync(n1.sock).gid}`);
  });

  test("restic, lego, node and dendrite run hardened as the users the program renders", async () => {
    const cases: [ImageName, string, string[], RegExp][] = [
      ["restic", DENDRITE_USER, ["--entrypoint", "restic", image("restic"), "version"], /^restic 0\.14\./],
      // Debian's lego reports its version as "dev": the package's version says which it is.
      ["lego", TURN_CERT_USER, ["--entrypoint", "sh", image("lego"), "-c", "/lego --version && dpkg-query -W -f '${Version}\\n' lego"], /^lego version [^\n]*\n4\.9\.1/],
      ["federationGate", "1000:1000", ["--entrypoint", "/usr/local/bin/node", image("federationGate"), "-e", "console.log(process.version)"], /^v24\.19\.0$/m],
      ["dendrite", DENDRITE_USER, ["--entrypoint", "/usr/bin/dendrite", image("dendrite"), "--version"], /0\.13\.8/],
    ];
    for (const [name, user, args, expected] of cases) {
      const r = await run([...HARDENED, "--user", user, "--tmpfs", "/tmp:mode=1777", ...args]);
      assert.equal(r.code, 0, `${name}: ${r.out}`);
      assert.match(r.out, expected, name);
    }
    // Dendrite's key generator writes the signing key the program's first start needs.
    const keys = await run([...HARDENED, "--user", DENDRITE_USER, "--tmpfs", "/tmp:mode=1777", "--entrypoint", "sh", image("dendrite"), "-c", "generate-keys --private-key /tmp/k.pem && head -n 1 /tmp/k.pem && curl --version | head -n 1"]);
    assert.equal(keys.code, 0, keys.out);
    assert.match(keys.stdout, /-----BEGIN MATRIX PRIVATE KEY-----/);
    assert.match(keys.stdout, /^curl /m);
  });

  test("traefik, when its recipe built it, runs hardened as the program's user", { skip: false }, async (t) => {
    if (!available("traefik")) return t.skip(`traefik not built here: ${JSON.stringify(images.find((i) => i.name === "traefik"))}`);
    const r = await run([...HARDENED, "--user", TRAEFIK_USER, "--tmpfs", "/tmp:mode=1777", "--entrypoint", "traefik", image("traefik"), "version"]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /Version:\s+3\./);
  });
});
