import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeConfigValue, parseSettings, SettingsError } from "../components/settings";
import { readStackConfig } from "../plan/stackConfig";
import { problemsFor, problemsOf, settingsFor } from "./support/settings";



test("the local stack file gives the embedded default", () => {
  const s = settingsFor("local");
  assert.equal(s.target, "local");
  assert.equal(s.serverName, "matrix.localhost");
  assert.equal(s.matrixFqdn, "matrix.localhost");
  assert.equal(s.httpsPort, 8443);
  assert.equal(s.vpn, "none");
  assert.equal(s.images.traefik, "traefik:v3.7.13");
  assert.equal(s.servesWellKnown, false);
});

test("a bad domain is named with its key and value", () => {
  const problems = problemsFor("local", { "hardened-matrix:domain": "my server" });
  assert.deepEqual(problems, ['hardened-matrix:domain: "my server" is not a DNS name (lower-case labels separated by dots)']);
});

test("a value out of range names the key", () => {
  const [p] = problemsFor("local", { "hardened-matrix:maxUploadMb": 99999 });
  assert.match(p!, /^hardened-matrix:maxUploadMb: 99999 .*(2048)/);
});

test("an unknown key is refused, with the likely intended key", () => {
  assert.deepEqual(problemsFor("local", { "hardened-matrix:domian": "example.org" }), [
    'hardened-matrix:domian: is not a known setting (did you mean "domain"?)',
  ]);
  const [nested] = problemsFor("local", { "hardened-matrix:images": { trafik: "traefik:v3.7.13" } });
  assert.equal(nested, 'hardened-matrix:images.trafik: is not a known setting (did you mean "traefik"?)');
});

test("a missing required value says so", () => {
  // Refused where the Pulumi CLI refuses it: Pulumi.yaml declares domain without a default.
  const problems = problemsFor("local", { "hardened-matrix:domain": undefined });
  assert.equal(problems.length, 1);
  assert.match(problems[0]!, /^hardened-matrix:domain: is required but not set /);
});

test("every problem is reported at once, one line each", () => {
  const problems = problemsFor("local", {
    "hardened-matrix:domain": "not a domain",
    "hardened-matrix:turnPort": 70000,
    "hardened-matrix:federatonMode": "open",
  });
  assert.equal(problems.length, 3);
  assert.ok(problems.some((p) => p.startsWith("hardened-matrix:domain:")));
  assert.ok(problems.some((p) => p.startsWith("hardened-matrix:turnPort: 70000")));
  assert.ok(problems.some((p) => p.startsWith("hardened-matrix:federatonMode: is not a known setting")));
});

test("the error message lists the problems under one heading", () => {
  const e = new SettingsError(["hardened-matrix:a: x", "hardened-matrix:b: y"]);
  assert.equal(e.message, "invalid stack config (2 problems):\n  hardened-matrix:a: x\n  hardened-matrix:b: y");
});

test("impossible combinations: the local target with droplet nodes and sizes", () => {
  const problems = problemsFor("local", { "hardened-matrix:nodes": [{ name: "n1", size: "s-1vcpu-2gb", roles: ["manager", "edge", "db", "turn"] }] });
  assert.deepEqual(problems, ['hardened-matrix:nodes: target "local" runs on the local Docker engine; droplet nodes and sizes are for target "digitalocean"']);
});

test("impossible combinations: privileged ports on the local target", () => {
  assert.deepEqual(problemsFor("local", { "hardened-matrix:httpsPort": 443 }), [
    "hardened-matrix:httpsPort: 443 is a privileged port; the local target publishes unprivileged ports (1024-65535)",
  ]);
});

test("impossible combinations: a server name outside the domain without delegation", () => {
  const problems = problemsFor("local", { "hardened-matrix:serverName": "example.net" });
  assert.ok(problems.includes('hardened-matrix:serverName: "example.net" is not under the domain "matrix.localhost"; with delegation "none" it must be (or set delegation to well-known or srv)'));
});

test("impossible combinations: an empty allowlist, and an allowlist without allowlist mode", () => {
  assert.match(problemsFor("local", { "hardened-matrix:federationMode": "allowlist" })[0]!, /^hardened-matrix:federationAllowlist: is empty/);
  assert.match(problemsFor("local", { "hardened-matrix:federationAllowlist": ["matrix.org"] })[0]!, /^hardened-matrix:federationAllowlist: is set but federationMode is "closed"/);
});

test("impossible combinations: relay range reversed", () => {
  assert.deepEqual(problemsFor("local", { "hardened-matrix:turnMinPort": 50000, "hardened-matrix:turnMaxPort": 49999 }), [
    "hardened-matrix:turnMinPort: 50000 must be below turnMaxPort (49999)",
  ]);
});

test("a secret set in plain text is refused", () => {
  const problems = problemsFor("local", { "hardened-matrix:acmeCa": "none", "hardened-matrix:acmeDnsToken": "plain-token-value" });
  assert.ok(problems.includes("hardened-matrix:acmeDnsToken: is a secret; set it with `pulumi config set --secret acmeDnsToken ...`"));
});

test("image references must be pinned", () => {
  const [p] = problemsFor("local", { "hardened-matrix:images": { traefik: "traefik:latest" } });
  assert.equal(p, "hardened-matrix:images.traefik: \"traefik:latest\" must not use the floating tag 'latest'");
  const [q] = problemsFor("local", { "hardened-matrix:images": { postgres: "postgres" } });
  assert.match(q!, /^hardened-matrix:images.postgres: "postgres" must be an image reference pinned/);
});

test("cloud-only combinations: even managers, two edges, bad region", () => {
  const cloud = {
    "hardened-matrix:target": "digitalocean",
    "hardened-matrix:domain": "example.org",
    "hardened-matrix:matrixHost": "matrix",
    "hardened-matrix:turnHost": "turn",
    "hardened-matrix:delegation": "well-known",
    "hardened-matrix:httpPort": 80,
    "hardened-matrix:httpsPort": 443,
    "hardened-matrix:vpn": "tailscale",
    "hardened-matrix:acmeCa": "letsencrypt",
    "hardened-matrix:acmeEmail": "ops@example.org",
    "hardened-matrix:turnExternalIp": "",
    "hardened-matrix:admins": ["ops@example.org"],
    "hardened-matrix:region": "mars1",
    "hardened-matrix:cloudflareZoneId": "0123456789abcdef0123456789abcdef",
    "hardened-matrix:nodes": [
      { name: "a", size: "s-1vcpu-2gb", roles: ["manager", "edge", "db", "turn"] },
      { name: "b", size: "s-1vcpu-2gb", roles: ["manager", "edge"] },
    ],
  };
  const problems = problemsFor("local", cloud);
  assert.ok(problems.some((p) => p.startsWith('hardened-matrix:region: "mars1" is not a DigitalOcean region slug; allowed: nyc1')), problems.join("\n"));
  const fixedRegion = problemsFor("local", { ...cloud, "hardened-matrix:region": "fra1" });
  assert.deepEqual(fixedRegion, [
    "hardened-matrix:nodes: has 2 Swarm managers; allowed: an odd number (1, 3, 5) so the Raft quorum survives a split",
    'hardened-matrix:nodes: has 2 nodes with role "edge"; allowed: exactly one',
  ]);
  const [size] = problemsFor("local", { ...cloud, "hardened-matrix:region": "fra1", "hardened-matrix:nodes": [{ name: "a", size: "huge", roles: ["manager", "edge", "db", "turn"] }] });
  assert.match(size!, /^hardened-matrix:nodes\[0\]\.size: "huge" is not a known droplet size; allowed: s-1vcpu-512mb-10gb/);
});

test("Pulumi.yaml declares every primitive setting with a type, and nothing the schema does not know", async () => {
  const { parse } = await import("yaml");
  const { readFileSync } = await import("node:fs");
  const { settingsSchema, OBJECT_DEFAULTS, SECRET_KEYS } = await import("../components/settings");
  const project = parse(readFileSync(`${__dirname}/../Pulumi.yaml`, "utf8")) as { config: Record<string, { type: string; secret?: boolean }> };
  const declared = Object.keys(project.config).sort();
  // Keys settings.ts defaults itself (object-valued, optional secrets, target-dependent) are not declared.
  const shape = settingsSchema.shape as Record<string, { safeParse(v: unknown): { success: boolean } }>;
  const schemaKeys = Object.keys(shape).filter((k) => !(k in OBJECT_DEFAULTS) && !shape[k]!.safeParse(undefined).success).sort();
  assert.deepEqual(declared, schemaKeys);
  // A declared secret needs a value or a default, and the CLI refuses a secret's default
  // (pulumi/pulumi#21865): the optional secrets are settings.ts's alone, which refuses plain text.
  for (const key of SECRET_KEYS) {
    assert.ok(!(key in project.config), `${key} must not be declared in Pulumi.yaml`);
    assert.equal(OBJECT_DEFAULTS[key], "", `${key} defaults to empty in settings.ts`);
  }
});

test("TURN over TLS needs both the certificate and the key, as secrets", () => {
  assert.deepEqual(problemsFor("local", { "hardened-matrix:turnTls": "static", "hardened-matrix:turnTlsCertPem": { secure: "v1:x" } }), [
    'hardened-matrix:turnTlsKeyPem: is missing; turnTls "static" needs both turnTlsCertPem and turnTlsKeyPem',
  ]);
  assert.ok(
    problemsFor("local", { "hardened-matrix:turnTls": "static", "hardened-matrix:turnTlsCertPem": "-----BEGIN CERTIFICATE-----", "hardened-matrix:turnTlsKeyPem": { secure: "v1:x" } }).includes(
      "hardened-matrix:turnTlsCertPem: is a secret; set it with `pulumi config set --secret turnTlsCertPem ...`",
    ),
  );
});

test("secret settings come out only as secret outputs, and only when set", async () => {
  const pulumi = await import("@pulumi/pulumi");
  assert.deepEqual(settingsFor("local").secrets, {});
  const s = settingsFor("local", { "hardened-matrix:turnTls": "static", "hardened-matrix:turnTlsCertPem": { secure: "v1:c" }, "hardened-matrix:turnTlsKeyPem": { secure: "v1:k" } });
  assert.deepEqual(Object.keys(s.secrets).sort(), ["turnTlsCertPem", "turnTlsKeyPem"]);
  assert.equal(await pulumi.isSecret(s.secrets.turnTlsCertPem!), true);
  assert.equal("turnTlsCertPem" in s, false, "no plain copy of a secret on the settings");
});

test("dockerSocketGid: local takes the local socket's group, droplets the fixed gid cloud-init gives the docker group", async () => {
  const { DOCKER_SOCKET_GID } = await import("../components/settings");
  const withFacts = (stack: string, facts: { localDockerSocketGid?: number }, overrides: Record<string, unknown> = {}) => {
    const { values, secretKeys } = readStackConfig(stack, undefined, overrides);
    const raw = Object.fromEntries(Object.entries(values).filter(([k]) => k.startsWith("hardened-matrix:")).map(([k, v]) => [k.slice("hardened-matrix:".length), decodeConfigValue(v)]));
    return parseSettings(stack, raw, new Set(secretKeys), facts);
  };
  assert.equal(DOCKER_SOCKET_GID, 65200);
  assert.equal(withFacts("local", { localDockerSocketGid: 107 }).dockerSocketGid, 107);
  assert.equal(withFacts("local", {}).dockerSocketGid, DOCKER_SOCKET_GID, "no local socket (e.g. planning without Docker)");
  assert.equal(withFacts("local", { localDockerSocketGid: 107 }, { "hardened-matrix:dockerSocketGid": 998 }).dockerSocketGid, 998, "set explicitly, it wins");
  assert.equal(withFacts("dev", { localDockerSocketGid: 107 }).dockerSocketGid, DOCKER_SOCKET_GID, "the deployer's socket says nothing about a droplet");
  assert.equal(withFacts("dev", {}, { "hardened-matrix:dockerSocketGid": 65001 }).dockerSocketGid, 65001);
  // A root-owned socket would put the proxy in the root group: refused, naming the key.
  assert.throws(() => withFacts("local", { localDockerSocketGid: 0 }), (e: unknown) => {
    assert.ok(e instanceof SettingsError);
    assert.deepEqual(e.problems.map((p) => p.split(":").slice(0, 2).join(":")), ["hardened-matrix:dockerSocketGid"]);
    assert.match(e.problems[0]!, /belongs to group 0 \(root\)/);
    return true;
  });
});

test("dockerSocketGid on droplets: a gid Debian may already use is refused, naming the allowed range", () => {
  assert.deepEqual(problemsFor("dev", { "hardened-matrix:dockerSocketGid": 999 }), [
    "hardened-matrix:dockerSocketGid: 999 may already be taken on a fresh Debian droplet; allowed: 65000-65533 (Debian Policy's reserved class, which nothing allocates; default 65200)",
  ]);
  assert.equal(problemsFor("dev", { "hardened-matrix:dockerSocketGid": 1000 }).length, 1);
  assert.equal(problemsFor("dev", { "hardened-matrix:dockerSocketGid": 65534 }).length, 1);
});

test("SRV delegation needs the DNS-01 token (a certificate for the server name) and a server name in the zone", () => {
  const prod = settingsFor("prod");
  assert.equal(prod.delegation, "srv");
  assert.ok(prod.secrets.acmeDnsToken, "the prod stack sets acmeDnsToken");
  const problems = problemsFor("prod", { "hardened-matrix:acmeDnsToken": "", "hardened-matrix:turnTls": "off" });
  assert.deepEqual(problems, [
    'hardened-matrix:delegation: "srv" needs hardened-matrix:acmeDnsToken (a Cloudflare DNS token for ACME DNS-01): federating servers demand a certificate for example.org from matrix.example.org; set it with `pulumi config set --secret acmeDnsToken ...`, or use delegation "well-known"',
  ]);
  const outside = problemsFor("prod", { "hardened-matrix:serverName": "example.net" });
  assert.deepEqual(outside, ['hardened-matrix:serverName: "example.net" is not under the domain "example.org"; delegation "srv" publishes _matrix-fed._tcp.example.net in that zone, so it must be']);
  // The local target has no ACME at all, so it cannot delegate by SRV.
  assert.ok(problemsFor("local", { "hardened-matrix:delegation": "srv" }).some((p) => p.startsWith('hardened-matrix:delegation: "srv" needs hardened-matrix:acmeDnsToken')));
});

test("deployerTag: a Tailscale tag, only with vpn tailscale on DigitalOcean", () => {
  assert.equal(settingsFor("dev", { "hardened-matrix:deployerTag": "tag:hm-ci" }).deployerTag, "tag:hm-ci");
  assert.equal(settingsFor("dev").deployerTag, "");
  assert.deepEqual(problemsFor("dev", { "hardened-matrix:deployerTag": "hm-ci" }), [
    'hardened-matrix:deployerTag: "hm-ci" is not a Tailscale tag (tag:name: a letter, then letters, digits, -)',
  ]);
  assert.deepEqual(problemsFor("local", { "hardened-matrix:deployerTag": "tag:hm-ci" }), [
    'hardened-matrix:deployerTag: target "local" has no tailnet; it is for target "digitalocean" with vpn "tailscale"',
  ]);
});

test("every setting has an inert stand-in, so an invalid value never hides the rules across the other keys", async () => {
  const { settingsSchema, inertValue } = await import("../components/settings");
  const without = Object.entries(settingsSchema.shape).filter(([, schema]) => {
    const v = inertValue(schema);
    return !schema.safeParse(v).success;
  });
  assert.deepEqual(without.map(([k]) => k), []);
});

test("a Postgres image of another major version is refused; a new minor of the pinned major is accepted", () => {
  const [p, ...rest] = problemsFor("local", { "hardened-matrix:images": { postgres: "postgres:18.1-alpine" } });
  assert.deepEqual(rest, []);
  assert.match(p!, /^hardened-matrix:images\.postgres: "postgres:18\.1-alpine" is PostgreSQL 18, but the database is PostgreSQL 17, .*allowed: a postgres:17\.x tag/);
  assert.deepEqual(problemsOf("local", { "hardened-matrix:images": { postgres: "postgres:17.10-alpine" } }), []);
  assert.match(problemsFor("local", { "hardened-matrix:images": { postgres: "mirror.example.org/pg:17" } })[0]!, /is not a postgres:<major>\.<minor> image/);
});
