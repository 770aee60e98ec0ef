import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { runChecks, type CheckResult } from "../ops/check";
import { dendriteDir, hostStackTarget, startHostStack, type HostStack } from "./e2e/hostStack";
import { formatResult, runScenario, type StepResult } from "./e2e/scenario";
import { builtEngine } from "./engine/harness";
import { clusterSkipReason } from "./support/netnsCluster";
import { findTools } from "./support/realTool";

// The real client (matrix-js-sdk) against the local stack's rendered configs, run by the real programs on
// loopback: PostgreSQL 15 and coTURN from Debian, Dendrite v0.13.8 from the Go module proxy. Then the
// self-check (ops/check.ts) against the same servers, and again with a service stopped.
// Dendrite's binaries: HM_DENDRITE_DIR, test/images/build-dendrite.sh when present, else the lead's prebuild.

const { skip: toolSkip } = findTools({
  initdb: ["initdb", "postgresql"],
  postgres: ["postgres", "postgresql"],
  turnserver: ["turnserver", "coturn"],
  setpriv: ["setpriv", "util-linux"],
});
const DENDRITE_DIR = dendriteDir();
const dendriteMissing = !existsSync(join(DENDRITE_DIR, "dendrite")) || !existsSync(join(DENDRITE_DIR, "create-account"));
if (dendriteMissing && process.env.CI) throw new Error(`Dendrite v0.13.8 is required in CI: ${DENDRITE_DIR} has no dendrite/create-account (test/images/build-dendrite.sh builds it)`);
const skip = toolSkip ?? (dendriteMissing ? `Dendrite v0.13.8 not built at ${DENDRITE_DIR} (test/images/build-dendrite.sh); CI builds it` : undefined);

// matrix-js-sdk 43.0.0 arms a timer per request that it never clears (lib/http-api/utils.js timeoutSignal:
// up to 110 s for a sync), which would keep this test's process alive long after the tests end. Long
// timers are unref'd: they still fire while the process has work, they just do not hold it open.
const armTimer = globalThis.setTimeout;
globalThis.setTimeout = Object.assign(
  (fn: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    const t = armTimer(fn, ms, ...args);
    if ((ms ?? 0) >= 60_000) t.unref();
    return t;
  },
  armTimer,
) as typeof setTimeout;

describe("e2e: a real Matrix client against the rendered local stack on real servers", { skip, timeout: 900_000 }, () => {
  let stack: HostStack;
  let results: StepResult[] = [];

  before(async () => {
    stack = await startHostStack({ dendriteDir: DENDRITE_DIR, maxLifetimeSeconds: 900, log: (l) => console.log(`# ${l}`) });
    results = await runScenario(
      hostStackTarget(stack),
      (r) => console.log(`# ${formatResult(r)}`),
    );
  });

  after(async () => {
    await stack?.stop();
  });

  test("every scenario step that needs no Traefik passes", () => {
    const failed = results.filter((r) => r.status === "failed");
    assert.deepEqual(failed.map(formatResult), [], `server log tail:\n${stack.logs().split("\n").slice(-40).join("\n")}`);
    // What runs without Traefik is the whole client flow; only the routing checks wait for it.
    assert.deepEqual(
      results.filter((r) => r.status === "skipped").map((r) => r.name),
      [
        "media: legacy /_matrix/media/v3/download needs a token at Traefik",
        "admin paths /_dendrite/ and /_synapse/ are not reachable through Traefik",
        "room directory: a browser's CORS preflight is answered, the directory itself needs a token",
        "plain HTTP serves no Matrix API (redirects to HTTPS)",
      ],
    );
    assert.ok(results.length >= 17);
  });

  describe("self-check (npm run check) against the same servers", () => {
    const byName = (rs: CheckResult[], name: string) => rs.find((r) => r.name === name) ?? assert.fail(`no check named ${name}`);
    let token = "";
    const input = () => ({
      clientUrl: stack.clientBaseUrl,
      expectedBaseUrl: stack.wellKnownBaseUrl,
      serverName: stack.serverName,
      federation: { mode: "closed" as const },
      turnUris: [`turn:127.0.0.1:${stack.turn!.port}?transport=udp`],
      accessToken: token,
      timeoutMs: 5000,
    });

    before(async () => {
      const localpart = `e2e-check-${randomBytes(3).toString("hex")}`;
      const password = randomBytes(18).toString("base64url");
      await stack.register(localpart, password);
      const r = await fetch(`${stack.clientBaseUrl}/_matrix/client/v3/login`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: localpart }, password }),
      });
      token = ((await r.json()) as { access_token: string }).access_token;
    });

    test("passes on the running servers, and flags the admin paths Dendrite serves when no Traefik is in front", async () => {
      const rs = await runChecks(input());
      for (const name of ["client API (/_matrix/client/versions)", "well-known client discovery matches the server", "TURN credentials and an allocation"]) {
        assert.equal(byName(rs, name).status, "ok", JSON.stringify(byName(rs, name)));
      }
      // Bare Dendrite hands out a registration nonce: exactly what the check exists to catch behind a wrong edge.
      const admin = byName(rs, "admin paths closed (/_dendrite/, /_synapse/)");
      assert.equal(admin.status, "failed");
      assert.match(admin.detail, /\/_synapse\/admin\/v1\/register 200 \(hands out a registration nonce\)/);
      assert.ok(admin.fix);
    });

    test("fails naming the TURN check when coTURN is stopped", async () => {
      await stack.stopService("coturn");
      const turn = byName(await runChecks(input()), "TURN credentials and an allocation");
      assert.equal(turn.status, "failed");
      assert.match(turn.fix ?? "", /coTURN does not answer/);
    });

    test("fails naming the client API check when Dendrite is stopped", async () => {
      await stack.stopService("dendrite");
      const rs = await runChecks(input());
      const clientApi = byName(rs, "client API (/_matrix/client/versions)");
      assert.equal(clientApi.status, "failed");
      assert.match(clientApi.detail, /127\.0\.0\.1/);
      assert.equal(byName(rs, "well-known client discovery matches the server").status, "failed");
    });
  });
});

// The same client through Traefik against the local stack as deployed: the real engine, a private
// Docker engine in a network namespace, the real programs' images (`npm run e2e -- --deployed`).
const deployedSkip = clusterSkipReason() ?? (builtEngine() ? undefined : "the Pulumi engine is not built here: run `npm run engine:build`");
if (deployedSkip && process.env.CI) throw new Error(`the deployed e2e runs in CI: ${deployedSkip}`);
describe("e2e: the real client through Traefik against the deployed local stack", { skip: deployedSkip, timeout: 40 * 60_000 }, () => {
  test("every step passes, the Traefik-only checks and the restart of every service included; the self-check passes, then fails naming the stopped service; teardown leaves nothing", {
    // 17 ok, 1 skip (the wrong-secret registration needs Dendrite's admin path straight, which Traefik does not route).
    timeout: 36 * 60_000,
  }, async () => {
    const started = Date.now();
    const r = spawnSync(process.execPath, ["--import", "tsx", join(__dirname, "e2e/cli.ts"), "--deployed"], { encoding: "utf8", timeout: 35 * 60_000, maxBuffer: 64 * 1024 * 1024 });
    const out = `${r.stdout}${r.stderr}`;
    console.log(out.split("\n").map((l) => `# ${l}`).join("\n"));
    console.log(`# wall time ${Math.round((Date.now() - started) / 1000)} s`);
    assert.equal(r.status, 0, out.slice(-8000));
    assert.match(out, /^\d+ ok, 0 failed, 1 skipped$/m);
    assert.match(out, /^skip shared-secret registration with a wrong secret is refused \(admin path\)/m);
    for (const step of ["admin paths /_dendrite/ and /_synapse/ are not reachable through Traefik", "plain HTTP serves no Matrix API (redirects to HTTPS)", "media: legacy /_matrix/media/v3/download needs a token at Traefik", "room directory: a browser's CORS preflight is answered, the directory itself needs a token", "a restart of every service loses no message"]) {
      assert.match(out, new RegExp(`^ok .*${step.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}`, "m"), step);
    }
    for (const expectation of [
      "passes on the running stack (failed: none)",
      "the TURN check allocated a relay",
      "the admin-path check saw 404 through Traefik",
      "with coTURN stopped, the TURN check fails and says what to do",
      "with coTURN stopped, the client API check still passes",
      "with Dendrite stopped, the client API check fails",
    ]) {
      assert.match(out, new RegExp(`^ok   self-check: ${expectation.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}`, "m"), expectation);
    }
    assert.doesNotMatch(out, /^FAIL/m);
    assert.match(out, /# torn down after/);
    assert.doesNotMatch(out, /LEFT BEHIND/);
  });
});
