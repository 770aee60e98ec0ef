import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { ACME_SERVERS } from "../components/render/traefik";
import { decodeConfigValue, parseSettings, SettingsError, type Settings } from "../components/settings";
import { TURN_CERT_LIVE_PEM, TURN_CERT_USER } from "../components/services/turnCert";
import { planStack, type Plan } from "../plan/plan";
import { readStackConfig } from "../plan/stackConfig";
import { STACKS } from "./support/plan";
import { findTool } from "./support/realTool";
import { problemsFor, settingsFor } from "./support/settings";
import { selfSignedCert } from "./support/selfSignedCert";

type Json = Record<string, any>;
const service = (plan: Plan, name: string): Json | undefined => plan.resources.find((r) => r.name === name)?.inputs as Json | undefined;
const file = (plan: Plan, path: string): string | undefined => plan.files.find((f) => f.path === path)?.content;
const DAY = 86_400_000;

// ---- turnTls static: the operator's own certificate, checked at plan time ----------------------------

/** Settings with real PEMs as secrets (the offline plan's `secure:` values are stand-ins, not PEM). */
function staticSettings(certPem: string, keyPem: string, now = new Date()): Settings {
  const { values, secretKeys } = readStackConfig("local", undefined, {
    "hardened-matrix:turnTls": "static",
    "hardened-matrix:turnTlsCertPem": { secure: "v1:c" },
    "hardened-matrix:turnTlsKeyPem": { secure: "v1:k" },
  });
  const raw: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(values)) {
    if (key.startsWith("hardened-matrix:")) raw[key.slice("hardened-matrix:".length)] = secretKeys.includes(key) ? value : decodeConfigValue(value);
  }
  raw.turnTlsCertPem = certPem;
  raw.turnTlsKeyPem = keyPem;
  return parseSettings("local", raw, new Set(secretKeys), { now });
}

function staticProblems(certPem: string, keyPem: string, now = new Date()): string[] {
  try {
    staticSettings(certPem, keyPem, now);
  } catch (e) {
    assert.ok(e instanceof SettingsError, String(e));
    return e.problems;
  }
  assert.fail("accepted");
}

describe("turnTls static: nothing renews the operator's certificate, so the plan checks it", () => {
  const host = "matrix.localhost"; // the local stack's TURN name (turnHost "@")
  test("a valid certificate for the TURN host with its key: accepted, no warning", () => {
    const c = selfSignedCert(host, { notAfter: new Date(Date.now() + 80 * DAY) });
    assert.equal(staticSettings(c.certPem, c.keyPem).warnings, undefined);
  });
  test("expiring within 30 days: accepted with a warning naming the date", () => {
    const notAfter = new Date(Date.now() + 10 * DAY);
    const c = selfSignedCert(host, { notAfter });
    const warnings = staticSettings(c.certPem, c.keyPem).warnings ?? [];
    assert.equal(warnings.length, 1, String(warnings));
    assert.match(warnings[0], /^hardened-matrix:turnTlsCertPem: expires on .* \((9|10) days left\) and nothing renews it/);
  });
  test("expired: refused, naming the key", () => {
    const c = selfSignedCert(host, { notBefore: new Date(Date.now() - 100 * DAY), notAfter: new Date(Date.now() - DAY) });
    assert.deepEqual(staticProblems(c.certPem, c.keyPem).length, 1);
    assert.match(staticProblems(c.certPem, c.keyPem)[0], /^hardened-matrix:turnTlsCertPem: expired on /);
  });
  test("a certificate for another name, or with another key: refused", () => {
    const other = selfSignedCert("turn.elsewhere.example");
    assert.ok(staticProblems(other.certPem, other.keyPem).some((p) => p.startsWith(`hardened-matrix:turnTlsCertPem: does not name the TURN host ${host}`)));
    const a = selfSignedCert(host);
    const b = selfSignedCert(host);
    assert.deepEqual(staticProblems(a.certPem, b.keyPem), ["hardened-matrix:turnTlsKeyPem: is not the key of turnTlsCertPem"]);
  });
  test("an encrypted value the plan cannot read: planned, with a warning that it was not checked", () => {
    const s = settingsFor("local", { "hardened-matrix:turnTls": "static", "hardened-matrix:turnTlsCertPem": { secure: "v1:c" }, "hardened-matrix:turnTlsKeyPem": { secure: "v1:k" } });
    assert.match((s.warnings ?? []).join("\n"), /not PEM here, so the certificate's name, key and expiry were not checked/);
  });
});

// ---- turnTls settings ---------------------------------------------------------------------------------

describe("turnTls: one clear error per impossible combination", () => {
  test("acme needs acmeDnsToken, and names it", () => {
    assert.ok(
      problemsFor("dev", { "hardened-matrix:turnTls": "acme" }).some((p) => p.startsWith('hardened-matrix:turnTls: "acme" obtains the TURN certificate by DNS-01 and needs hardened-matrix:acmeDnsToken')),
    );
  });
  test("acme on the local target (acmeCa none) is refused", () => {
    assert.ok(problemsFor("local", { "hardened-matrix:turnTls": "acme" }).some((p) => p.startsWith('hardened-matrix:turnTls: "acme" needs acmeCa letsencrypt or letsencrypt-staging')));
  });
  test("a certificate set while turnTls is not static is refused, not silently ignored", () => {
    assert.ok(
      problemsFor("prod", { "hardened-matrix:turnTlsCertPem": { secure: "v1:c" }, "hardened-matrix:turnTlsKeyPem": { secure: "v1:k" } }).some((p) =>
        p.startsWith('hardened-matrix:turnTlsCertPem: is set but turnTls is "acme"'),
      ),
    );
  });
  test("TLS without TURN is refused", () => {
    assert.ok(problemsFor("prod", { "hardened-matrix:turnEnabled": false }).includes('hardened-matrix:turnTls: is "acme" but turnEnabled is false; allowed: off'));
  });
});

// ---- the wiring, over every stack file -------------------------------------------------------------

describe("every stack: TURN TLS is renewed by turn-cert or absent, never a certificate nobody renews", () => {
  for (const stack of STACKS) {
    test(`${stack}: the wiring matches turnTls`, async () => {
      const settings = settingsFor(stack);
      if (stack === "prod") assert.equal(settings.turnTls, "acme", "the production example serves TURN over TLS with a certificate that renews");
      const plan = await planStack(stack);
      assert.equal(plan.error, undefined, String(plan.error));
      const lego = service(plan, "turn-cert-service");
      const coturn = service(plan, "coturn-service");
      const conf = file(plan, "coturn-config/turnserver.conf");
      if (!settings.turnEnabled) {
        assert.equal(coturn, undefined);
        assert.equal(lego, undefined);
        return;
      }
      const dendrite = file(plan, "dendrite-config/dendrite.yaml") ?? "";
      if (settings.turnTls !== "acme") {
        assert.equal(lego, undefined, "no certificate service without turnTls acme");
        if (settings.turnTls === "off") {
          assert.match(conf ?? "", /^no-tls$/m);
          assert.doesNotMatch(dendrite, /turns:/);
        }
        return;
      }
      assert.ok(lego && coturn && conf);
      // Next to coturn, sharing its volume: the same placement.
      assert.deepEqual(lego.taskSpec.placement.constraints, coturn.taskSpec.placement.constraints);
      assert.deepEqual(lego.taskSpec.placement.constraints, ["node.labels.hardened-matrix.role.turn==true"]);
      // Hardened like every service: non-root, read-only root, every capability dropped, no port published.
      const spec = lego.taskSpec.containerSpec;
      assert.equal(spec.user, TURN_CERT_USER);
      assert.notEqual(spec.user.split(":")[0], "0");
      assert.equal(spec.readOnly, true);
      assert.deepEqual(spec.capDrops, ["ALL"]);
      assert.deepEqual(spec.capAdds, []);
      assert.equal(lego.endpointSpec, undefined, "turn-cert publishes no port");
      assert.match(spec.image, /^goacme\/lego:v4\.\d+\.\d+$/);
      // The Cloudflare token: a Swarm secret file for lego only.
      assert.deepEqual(spec.secrets.map((s: Json) => [s.fileName, s.fileUid, s.fileMode]), [["/run/secrets/cf-dns-api-token", TURN_CERT_USER.split(":")[0], 0o400]]);
      assert.equal(spec.env.CF_DNS_API_TOKEN_FILE, "/run/secrets/cf-dns-api-token");
      const tokenSecretIds = new Set(spec.secrets.map((s: Json) => s.secretId));
      for (const r of plan.resources.filter((r) => r.type === "docker:index/service:Service" && r.name !== "turn-cert-service" && r.name !== "traefik-service")) {
        const ids = ((r.inputs as Json).taskSpec.containerSpec.secrets ?? []).map((s: Json) => s.secretId);
        assert.ok(!ids.some((id: string) => tokenSecretIds.has(id)), `${r.name} must not get the DNS token`);
      }
      // The volume: written by lego, read-only for coturn, created the same way by whichever starts first.
      const volumeOf = (svc: Json): Json => svc.taskSpec.containerSpec.mounts.find((m: Json) => m.type === "volume");
      assert.equal(volumeOf(lego).readOnly, false);
      assert.equal(volumeOf(coturn).readOnly, true);
      assert.deepEqual({ ...volumeOf(lego), readOnly: true }, volumeOf(coturn));
      assert.equal(volumeOf(lego).volumeOptions.driverOptions.type, "tmpfs");
      assert.match(volumeOf(lego).volumeOptions.driverOptions.o, /(^|,)mode=0750(,|$)/);
      // coturn reads the file the loop installs, under the watcher that reloads it.
      assert.match(conf, new RegExp(`^cert=${TURN_CERT_LIVE_PEM}$`, "m"));
      assert.match(conf, new RegExp(`^pkey=${TURN_CERT_LIVE_PEM}$`, "m"));
      assert.match(conf, new RegExp(`^tls-listening-port=${settings.turnTlsPort}$`, "m"));
      assert.deepEqual(coturn.taskSpec.containerSpec.commands, ["/bin/sh", "/etc/coturn/run-turnserver.sh"]);
      const wrapper = file(plan, "coturn-run/run-turnserver.sh") ?? "";
      assert.match(wrapper, new RegExp(`cert='${TURN_CERT_LIVE_PEM}'`));
      assert.match(wrapper, /kill -USR2/);
      // The loop asks this stack's CA for the TURN name and renews at 30 days left.
      const script = file(plan, "turn-cert-script/renew.sh") ?? "";
      assert.ok(script.includes(`--server '${ACME_SERVERS[settings.acmeCa as keyof typeof ACME_SERVERS]}'`), script);
      assert.ok(script.includes(`--domains '${settings.turnFqdn}'`));
      assert.ok(script.includes(`--email '${settings.acmeEmail}'`));
      assert.match(script, /--dns cloudflare/);
      assert.match(script, /renew --days 30 /);
      assert.ok(script.includes(`live='${TURN_CERT_LIVE_PEM}'`));
      assert.match(dendrite, new RegExp(`turns:${settings.turnFqdn.replace(/\./g, "\\.")}:${settings.turnTlsPort}\\?transport=tcp`));
    });
  }

  test("prod: acme opens no port for the certificate (DNS-01); the TLS port is open only while coTURN serves TLS", async () => {
    const turnRules = (plan: Plan): string[] => {
      const fw = plan.resources.find((r) => r.type === "digitalocean:index/firewall:Firewall" && r.name.endsWith("-turn"))!;
      return ((fw.inputs as { inboundRules: Array<{ portRange: string; protocol: string }> }).inboundRules ?? []).map((r) => `${r.portRange}/${r.protocol}`);
    };
    const others = (plan: Plan): string =>
      JSON.stringify(plan.resources.filter((r) => r.type === "digitalocean:index/firewall:Firewall" && !r.name.endsWith("-turn")).map((r) => [r.name, r.inputs]));
    const acme = await planStack("prod");
    const off = await planStack("prod", { "hardened-matrix:turnTls": "off" });
    assert.ok(service(acme, "turn-cert-service") && !service(off, "turn-cert-service"));
    assert.equal(others(acme), others(off));
    assert.deepEqual(turnRules(acme), ["3478/udp", "3478/tcp", "5349/udp", "5349/tcp", "49152-49251/udp"]);
    // With turnTls off coTURN runs no-tls and no-dtls: nothing listens on 5349, so nothing opens it.
    assert.deepEqual(turnRules(off), ["3478/udp", "3478/tcp", "49152-49251/udp"]);
    assert.match(file(off, "coturn-config/turnserver.conf") ?? "", /^no-tls$/m);
  });

  test("dev (one node, every role) with a token: turn-cert is placed by the turn role and asks the staging CA", async () => {
    const plan = await planStack("dev", { "hardened-matrix:turnTls": "acme", "hardened-matrix:acmeDnsToken": { secure: "v1:t" } });
    assert.equal(plan.error, undefined, String(plan.error));
    assert.match(file(plan, "turn-cert-script/renew.sh") ?? "", /acme-staging-v02\.api\.letsencrypt\.org/);
    assert.deepEqual(service(plan, "turn-cert-service")!.taskSpec.placement.constraints, ["node.labels.hardened-matrix.role.turn==true"]);
  });

  test("the planned shell passes shellcheck (POSIX sh: busybox ash and dash run it)", async (t) => {
    const shellcheck = findTool("shellcheck", "shellcheck");
    if (!shellcheck) return t.skip("shellcheck not installed");
    const plan = await planStack("prod");
    const dir = mkdtempSync(join(tmpdir(), "turn-sh-"));
    try {
      for (const path of ["turn-cert-script/renew.sh", "coturn-run/run-turnserver.sh"]) {
        const f = join(dir, path.replace("/", "-"));
        writeFileSync(f, file(plan, path) ?? assert.fail(`${path} not planned`));
        execFileSync(shellcheck, ["-s", "sh", f], { encoding: "utf8" });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---- turnTls static under the plan --------------------------------------------------------------------

test("turnTls static: coTURN listens with TLS and gets the certificate and key as secret files, no turn-cert", async () => {
  const plan = await planStack("local", {
    "hardened-matrix:turnTls": "static",
    "hardened-matrix:turnTlsCertPem": { secure: "v1:cert" },
    "hardened-matrix:turnTlsKeyPem": { secure: "v1:key" },
  });
  assert.equal(plan.error, undefined, String(plan.error));
  const conf = file(plan, "coturn-config/turnserver.conf")!;
  assert.match(conf, /^tls-listening-port=5349$/m);
  assert.match(conf, /^cert=\/run\/secrets\/turn-cert\.pem$/m);
  assert.match(conf, /^pkey=\/run\/secrets\/turn-key\.pem$/m);
  assert.doesNotMatch(conf, /^no-tls$/m);
  const coturn = service(plan, "coturn-service")!;
  const files = coturn.taskSpec.containerSpec.secrets.map((s: Json) => [s.fileName, s.fileMode]);
  assert.deepEqual(files.sort(), [
    ["/etc/coturn/turnserver.conf", 0o400],
    ["/run/secrets/turn-cert.pem", 0o400],
    ["/run/secrets/turn-key.pem", 0o400],
  ]);
  assert.deepEqual(coturn.taskSpec.containerSpec.commands, ["turnserver"]);
  assert.equal(service(plan, "turn-cert-service"), undefined);
  for (const name of ["coturn-tls-cert", "coturn-tls-key"]) {
    assert.equal((plan.resources.find((r) => r.name === name)!.inputs as Json).data, "[secret]");
  }
  assert.match(file(plan, "dendrite-config/dendrite.yaml")!, /turns:matrix\.localhost:5349\?transport=tcp/);
});
