import assert from "node:assert/strict";
import { before, test } from "node:test";
import { parse } from "yaml";
import { parseMatrixSigningKeyPem, ed25519PublicKey } from "../components/render/signingKey";
import { mintTurnCredentials } from "../components/render/turnCredentials";
import { planStack, type Plan, type PlannedResource } from "../plan/plan";
import { named, plannedFile, type Inputs } from "./support/planned";

// The real program, local stack, under mocks: Postgres, Dendrite and coTURN wired by secrets.
let plan: Plan;
before(async () => {
  plan = await planStack("local");
  assert.equal(plan.error, undefined, String(plan.error));
});

const byName = (name: string): PlannedResource => named(plan, name);
const service = (name: string): Inputs => byName(`${name}-service`).inputs as Inputs;
const raw = (name: string): Inputs => plan.rawInputs.get(byName(name).urn) as Inputs;
const file = (path: string): string => plannedFile(plan, path);

test("the three services are planned with their networks, configs, secrets and volumes", () => {
  for (const name of ["postgres", "dendrite", "coturn"]) assert.ok(service(name), name);
  assert.deepEqual(
    plan.files.map((f) => f.path).filter((p) => /^(postgres|dendrite|coturn)/.test(p)).sort(),
    [
      "coturn-config/turnserver.conf",
      "dendrite-config/dendrite.yaml",
      "dendrite-signing-key/matrix-signing-key.pem",
      "postgres-dendrite-secret/dendrite-db-password",
      "postgres-init/10-dendrite.sh",
      "postgres-start/hm-postgres-start",
      "postgres-superuser-secret/postgres-superuser-password",
    ],
  );
  for (const purpose of ["postgres", "dendrite"]) {
    const v = byName(`local-${purpose}-volume`);
    assert.equal(v.options.protect, true);
    assert.equal(v.options.retainOnDelete, true);
  }
});

test("Postgres: internal network shared with Dendrite only, never published, passwords as files", () => {
  const pg = service("postgres");
  assert.equal(pg.endpointSpec, undefined);
  const net = byName("postgres-net");
  assert.equal((net.inputs as Inputs).internal, true);
  const members = plan.resources
    .filter((r) => r.type === "docker:index/service:Service" && (r.inputs as Inputs).taskSpec.networksAdvanceds.some((n: Inputs) => n.id === net.id))
    .map((r) => (r.inputs as Inputs).name)
    .sort();
  assert.deepEqual(members, ["dendrite", "postgres"]);
  const c = pg.taskSpec.containerSpec;
  assert.equal(c.env.POSTGRES_PASSWORD_FILE, "/run/secrets/postgres-superuser-password");
  assert.equal(c.user, "70:70");
  assert.deepEqual(c.healthcheck.tests.slice(0, 2), ["CMD", "pg_isready"]);
  assert.ok(c.args.includes("password_encryption=scram-sha-256"));
  assert.ok(c.mounts.some((m: Inputs) => m.target === "/dev/shm" && m.type === "tmpfs"));
  const init = file("postgres-init/10-dendrite.sh");
  assert.match(init, /\/run\/secrets\/dendrite-db-password/);
  assert.doesNotMatch(init, new RegExp(file("postgres-dendrite-secret/dendrite-db-password")));
});

test("Dendrite's config uses the same database password Postgres creates the role with", () => {
  const config = parse(file("dendrite-config/dendrite.yaml"));
  const url = new URL(config.global.database.connection_string);
  assert.equal(url.hostname, "postgres");
  assert.equal(url.username, "dendrite");
  assert.equal(decodeURIComponent(url.password), file("postgres-dendrite-secret/dendrite-db-password"));
  const maxConnections = Number(/^max_connections=(\d+)$/.exec(service("postgres").taskSpec.containerSpec.args.find((a: string) => a.startsWith("max_connections=")))![1]);
  // Postgres keeps 3 connections for superusers; the healthcheck and an admin need a few more.
  assert.ok(config.global.database.max_open_conns <= maxConnections - 5, `${config.global.database.max_open_conns} vs max_connections ${maxConnections}`);
});

test("Dendrite: registration closed, TURN on with coTURN's secret, server name, storage on the volume", () => {
  const config = parse(file("dendrite-config/dendrite.yaml"));
  assert.equal(config.global.server_name, "matrix.localhost");
  assert.equal(config.global.private_key, "/run/secrets/matrix-signing-key.pem");
  assert.equal(config.client_api.registration_disabled, true);
  assert.equal(config.client_api.guests_disabled, true);
  assert.equal(config.global.disable_federation, true, "local stack: federation closed");
  const turnConf = file("coturn-config/turnserver.conf");
  const secret = /^static-auth-secret=(.+)$/m.exec(turnConf)?.[1];
  assert.ok(secret);
  assert.equal(config.client_api.turn.turn_shared_secret, secret);
  assert.ok(config.client_api.turn.turn_user_lifetime.length > 0);
  assert.deepEqual(config.client_api.turn.turn_uris, ["turn:matrix.localhost:3478?transport=udp", "turn:matrix.localhost:3478?transport=tcp"]);
  assert.match(config.media_api.base_path, /^\/var\/dendrite\//);
  assert.match(config.global.jetstream.storage_path, /^\/var\/dendrite\//);
  const mount = service("dendrite").taskSpec.containerSpec.mounts.find((m: Inputs) => m.target === "/var/dendrite");
  assert.equal(mount.type, "volume");
  assert.equal(mount.source, "hardened-matrix-dendrite");
});

test("credentials Dendrite would mint are valid for coTURN (same secret, same algorithm)", () => {
  const secret = /^static-auth-secret=(.+)$/m.exec(file("coturn-config/turnserver.conf"))![1]!;
  const { username, password } = mintTurnCredentials(secret, "@alice:matrix.localhost", 3600, 1_700_000_000);
  assert.equal(username, "1700003600:@alice:matrix.localhost");
  assert.equal(password.length, 28, "base64 of a 20-byte HMAC-SHA1");
});

test("the signing key is generated once and kept: protected, retained, its public key exported", () => {
  const seed = byName("dendrite-signing-seed");
  assert.equal(seed.options.protect, true);
  assert.equal(seed.options.retainOnDelete, true);
  assert.equal(seed.inputs && (seed.inputs as Inputs).length, 32);
  const parsed = parseMatrixSigningKeyPem(file("dendrite-signing-key/matrix-signing-key.pem"));
  assert.equal(parsed.keyId, plan.outputs.signingKeyId);
  assert.equal(ed25519PublicKey(parsed.seed).toString("base64").replace(/=+$/, ""), plan.outputs.signingPublicKey);
});

test("coTURN: explicit external IP, denied private ranges, host networking named as an exception", () => {
  const conf = file("coturn-config/turnserver.conf");
  assert.match(conf, /^external-ip=127\.0\.0\.1$/m);
  assert.match(conf, /^denied-peer-ip=10\.0\.0\.0-10\.255\.255\.255$/m);
  assert.match(conf, /^denied-peer-ip=100\.64\.0\.0-100\.127\.255\.255$/m);
  assert.match(conf, /^no-tcp-relay$/m);
  assert.match(conf, /^min-port=49152$/m);
  const s = service("coturn");
  assert.deepEqual(s.taskSpec.networksAdvanceds.map((n: Inputs) => n.name), ["host"]);
  // Swarm stores a swarm-scoped id for "host" that no name lookup returns: compared, it would replace coTURN on every up.
  const coturnResource = plan.resources.find((r) => r.name === "coturn-service")!;
  assert.deepEqual(coturnResource.options.ignoreChanges, ["taskSpec.networksAdvanceds"]);
  for (const r of plan.resources.filter((x) => x.type === "docker:index/service:Service" && x.name !== "coturn-service")) {
    assert.deepEqual(r.options.ignoreChanges, [], `${r.name} must not ignore its network changes`);
  }
  const labels = Object.fromEntries(s.labels.map((l: Inputs) => [l.label, l.value]));
  assert.match(labels["hardened-matrix.exception.host-network"], /port range/);
  assert.match(labels["hardened-matrix.exception.cap-add.NET_BIND_SERVICE"], /file capability/);
  assert.deepEqual(s.taskSpec.containerSpec.capAdds, ["NET_BIND_SERVICE"]);
  // The image's default command looks the address up from an outside service: it is replaced.
  assert.deepEqual(s.taskSpec.containerSpec.commands, ["turnserver"]);
});

test("no service carries a secret in its environment", () => {
  const secrets = [
    file("postgres-dendrite-secret/dendrite-db-password"),
    file("postgres-superuser-secret/postgres-superuser-password"),
    /^static-auth-secret=(.+)$/m.exec(file("coturn-config/turnserver.conf"))![1]!,
    parse(file("dendrite-config/dendrite.yaml")).client_api.registration_shared_secret,
  ];
  for (const s of secrets) assert.ok(typeof s === "string" && s.length >= 32);
  for (const r of plan.resources.filter((x) => x.type === "docker:index/service:Service")) {
    const env = JSON.stringify(raw(r.name).taskSpec.containerSpec.env ?? {});
    for (const s of secrets) assert.ok(!env.includes(s), `${r.name} has a secret in env`);
  }
});

test("Traefik routes to Dendrite only the Matrix prefixes", () => {
  const labels = Object.fromEntries(service("dendrite").labels.map((l: Inputs) => [l.label, l.value]));
  assert.equal(labels["traefik.enable"], "true");
  assert.equal(labels["traefik.http.routers.dendrite-client.rule"], "Host(`matrix.localhost`) && (PathPrefix(`/_matrix/client/`) || PathPrefix(`/_matrix/media/`))");
  assert.equal(labels["traefik.http.routers.dendrite-federation.rule"], undefined, "federation closed on local");
});

test("every service on a local volume starts only after the volume's hand-over (the SDK sends the owner command as a dependency)", () => {
  const services = plan.resources.filter((r) => r.type === "docker:index/service:Service");
  let checked = 0;
  for (const svc of services) {
    for (const m of (raw(svc.name).taskSpec.containerSpec.mounts ?? []) as Inputs[]) {
      if (m.type !== "volume") continue;
      // The hand-over command is the one that chowns exactly this volume.
      const owners = plan.resources.filter((r) => r.type === "command:local:Command" && String((r.inputs as Inputs).create).includes(` -v ${m.source}:/data `));
      assert.equal(owners.length, 1, `${svc.name}: one hand-over for ${m.source}`);
      assert.ok(svc.options.dependsOn.includes(owners[0]!.urn), `${svc.name} does not depend on ${owners[0]!.name}: ${svc.options.dependsOn.join(", ")}`);
      checked++;
    }
  }
  assert.ok(checked >= 2, "postgres and dendrite mount local volumes");
});

test("local volumes are handed to their service's user by one root step with no network and only CHOWN/FOWNER", () => {
  const owner = byName("local-dendrite-owner").inputs as Inputs;
  assert.equal(
    owner.create,
    "docker run --rm --network none --cap-drop ALL --cap-add CHOWN --cap-add FOWNER --user 0:0 --entrypoint chown -v hardened-matrix-dendrite:/data postgres:17.9-alpine 10002:10002 /data\n",
  );
  assert.match((byName("local-postgres-owner").inputs as Inputs).create, / 70:70 \/data\n$/);
});
