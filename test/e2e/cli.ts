/**
 * `npm run e2e`: the client scenario (test/e2e/scenario.ts) against the local stack's rendered configs run
 * by the real programs on this machine (test/e2e/hostStack.ts), or against a deployed stack.
 *
 *   npm run e2e                       host stack: run the scenario, tear down
 *   npm run e2e -- --keep             ... and leave it up until Ctrl-C, printing how to use it
 *   npm run e2e -- --log FILE         ... and write the servers' logs to FILE (they hold no secrets but the
 *                                     access tokens Dendrite logs at debug level: mode 0600)
 *   npm run e2e -- --client-url https://matrix.localhost:8443 --server-name matrix.localhost \
 *       --well-known https://matrix.localhost:8443 --traefik-http-url http://matrix.localhost:8080
 *                                     a deployed local stack: accounts through ops/users.ts (the local
 *                                     engine's Dendrite container); a private CA via NODE_EXTRA_CA_CERTS
 *   npm run e2e -- --deployed         the local stack deployed by the real engine onto a private Docker engine
 *                                     (a network namespace) with the real programs' images; the scenario
 *                                     runs inside that namespace through Traefik (test/e2e/deployed.ts)
 *   npm run e2e -- --federation       two servers federating through their real edges, a third refused at the
 *                                     gate (test/federation.real.test.ts, run by node's test runner)
 *   ... --pin ADDR                    (with --client-url) send the server name's requests to ADDR and accept
 *                                     there only Traefik's generated default certificate (a local stack);
 *                                     --restart-services restarts every service of the engine at DOCKER_HOST
 *                                     for the restart step; --self-check-outputs FILE (the stack's outputs)
 *                                     then runs the self-check, stops coTURN and Dendrite, and checks again
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { createAccounts } from "../../ops/users";
import { formatCheck, runChecks, type CheckInput, type CheckResult } from "../../ops/check";
import { deployLocalStack, LOCAL, restartServices, routeToLocalStack, waitForRoutes } from "./deployed";
import { hostStackTarget, startHostStack, type HostStack } from "./hostStack";
import { formatResult, runScenario, type ScenarioTarget } from "./scenario";

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      keep: { type: "boolean", default: false },
      "client-url": { type: "string" },
      "server-name": { type: "string" },
      "well-known": { type: "string" },
      "traefik-http-url": { type: "string" },
      "no-restart": { type: "boolean", default: false },
      log: { type: "string" },
      deployed: { type: "boolean", default: false },
      pin: { type: "string" },
      "restart-services": { type: "boolean", default: false },
      "self-check-outputs": { type: "string" },
      federation: { type: "boolean", default: false },
    },
  });
  const say = (s: string) => process.stdout.write(`${s}\n`);
  let stack: HostStack | undefined;
  let target: ScenarioTarget;
  if (values.deployed) return runDeployed(say);
  if (values.federation) {
    const r = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-reporter", "spec", path.join(__dirname, "../federation.real.test.ts")], { stdio: "inherit", timeout: 900_000 });
    return r.status ?? 1;
  }
  if (values.pin) {
    const u = new URL(values["client-url"] ?? "");
    routeToLocalStack(u.hostname, values.pin);
    say(`# Traefik routes the client API after ${await waitForRoutes(u.origin)} ms`);
  }
  if (values["client-url"]) {
    if (!values["server-name"]) throw new Error("--client-url needs --server-name");
    target = {
      clientBaseUrl: values["client-url"],
      serverName: values["server-name"],
      wellKnownBaseUrl: values["well-known"] ?? values["client-url"],
      ...(values["traefik-http-url"] ? { traefik: { httpUrl: values["traefik-http-url"] } } : {}),
      // The pinned stack's own name (in its TURN URIs too) resolves to the pinned address; nothing else does.
      ...(values.pin ? { resolve: pinnedResolver(new URL(values["client-url"]).hostname, values.pin) } : {}),
      register: async (localpart, password) => {
        const docker = (args: string[], input?: string) => {
          const r = spawnSync("docker", args, { input, encoding: "utf8", timeout: 120_000 });
          return { status: r.status ?? -1, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
        };
        const [o] = createAccounts([{ localpart, admin: false }], docker, () => password);
        if (o?.result !== "created") throw new Error(`create-account ${localpart}: ${o?.result} ${o?.detail ?? ""}`);
      },
      ...(values["restart-services"]
        ? {
            restart: async () => {
              await restartServices();
              if (values["client-url"]) say(`# Traefik routes the client API again after ${await waitForRoutes(values["client-url"])} ms`);
            },
          }
        : {}),
    };
  } else {
    stack = await startHostStack({ log: (l) => say(`# ${l}`) });
    say("# adaptations of the rendered files to this host:");
    for (const a of stack.adaptations) say(`#   ${a}`);
    target = hostStackTarget(stack, !values["no-restart"]);
  }
  let failed = 0;
  try {
    const results = await runScenario(target, (r) => say(formatResult(r)));
    failed = results.filter((r) => r.status === "failed").length;
    say(`${results.filter((r) => r.status === "ok").length} ok, ${failed} failed, ${results.filter((r) => r.status === "skipped").length} skipped`);
    if (values["self-check-outputs"]) failed += await selfCheckDrill(target, JSON.parse(readFileSync(values["self-check-outputs"], "utf8")) as Record<string, unknown>, values.pin, say);
    if (failed > 0 && stack) say(`--- last server logs ---\n${stack.logs().split("\n").slice(-60).join("\n")}`);
    if (values.keep && stack) {
      say("");
      say(`The stack is up. Client (homeserver) URL: ${stack.clientBaseUrl}   server name: ${stack.serverName}`);
      say("Create an account (it reads the password from stdin: type it on the next line, then Enter):");
      say(`  ${stack.createAccountCommand("yourname")}`);
      say(`Then log in from any Matrix client with homeserver ${stack.clientBaseUrl} (plain HTTP on loopback: no Traefik here).`);
      say(`TURN: 127.0.0.1:${stack.turn!.port}/udp. Ctrl-C stops everything and deletes ${stack.dir}.`);
      // Handlers stay installed through the teardown: a second Ctrl-C (or npm passing the signal on) must not
      // kill this process before the servers are stopped and the temp dir is gone.
      await new Promise<void>((resolve) => {
        for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, () => resolve());
      });
      say("stopping the servers ...");
    }
  } finally {
    if (values.log && stack) writeFileSync(values.log, stack.logs(), { mode: 0o600 });
    await stack?.stop();
  }
  return failed > 0 ? 1 : 0;
}

/**
 * The self-check (ops/check.ts) against the deployed stack, fed the stack's outputs as `npm run check` reads
 * them: every check passes or says why it skips; then with coTURN stopped the TURN check fails, and with
 * Dendrite stopped the client API check fails, each naming itself. Returns the number of unmet expectations.
 */
async function selfCheckDrill(t: ScenarioTarget, outputs: Record<string, unknown>, pin: string | undefined, say: (s: string) => void): Promise<number> {
  const localpart = `e2e-check-${randomBytes(3).toString("hex")}`;
  const password = randomBytes(18).toString("base64url");
  await t.register(localpart, password);
  const login = await fetch(`${t.clientBaseUrl}/_matrix/client/v3/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: localpart }, password }),
  });
  const token = ((await login.json()) as { access_token?: string }).access_token;
  const input: CheckInput = {
    clientUrl: String(outputs.matrixUrl),
    serverName: String(outputs.serverName),
    federation: { mode: "closed" },
    turnUris: Array.isArray(outputs.turnUris) ? (outputs.turnUris as string[]) : [],
    ...(token ? { accessToken: token } : {}),
    acme: false,
    timeoutMs: 5000,
    ...(t.resolve ? { resolve: t.resolve } : {}),
  };
  let unmet = 0;
  const expect = (what: string, ok: boolean) => {
    say(`${ok ? "ok  " : "FAIL"} self-check: ${what}`);
    if (!ok) unmet++;
  };
  const show = (rs: CheckResult[]) => rs.forEach((r) => say(`#   ${formatCheck(r).replace(/\n/g, "\n#   ")}`));
  const byName = (rs: CheckResult[], name: string) => rs.find((r) => r.name === name);
  say(`# self-check with the stack's outputs (${input.clientUrl}, ${input.turnUris.join(", ")})${pin ? `, ${new URL(input.clientUrl).hostname} at ${pin}` : ""}:`);
  const healthy = await runChecks(input);
  show(healthy);
  const failedNow = healthy.filter((r) => r.status === "failed").map((r) => r.name);
  expect(`passes on the running stack (failed: ${failedNow.join(", ") || "none"})`, failedNow.length === 0);
  expect("the TURN check allocated a relay", byName(healthy, "TURN credentials and an allocation")?.status === "ok");
  expect("the admin-path check saw 404 through Traefik", byName(healthy, "admin paths closed (/_dendrite/, /_synapse/)")?.status === "ok");
  const scale = (service: string) => {
    const r = spawnSync("docker", ["service", "scale", "--detach", `${service}=0`], { encoding: "utf8", timeout: 60_000 });
    if (r.status !== 0) throw new Error(`docker service scale ${service}=0: ${r.stderr}`);
  };
  const waitForFailure = async (name: string, deadlineMs: number): Promise<CheckResult[]> => {
    const end = Date.now() + deadlineMs;
    for (;;) {
      const rs = await runChecks(input);
      if (byName(rs, name)?.status === "failed" || Date.now() > end) return rs;
      await new Promise((r) => setTimeout(r, 2000));
    }
  };
  scale("coturn");
  const noTurn = await waitForFailure("TURN credentials and an allocation", 60_000);
  show(noTurn);
  expect("with coTURN stopped, the TURN check fails and says what to do", byName(noTurn, "TURN credentials and an allocation")?.status === "failed" && /coTURN/.test(byName(noTurn, "TURN credentials and an allocation")?.fix ?? ""));
  expect("with coTURN stopped, the client API check still passes", byName(noTurn, "client API (/_matrix/client/versions)")?.status === "ok");
  scale("dendrite");
  const noDendrite = await waitForFailure("client API (/_matrix/client/versions)", 60_000);
  show(noDendrite);
  expect("with Dendrite stopped, the client API check fails", byName(noDendrite, "client API (/_matrix/client/versions)")?.status === "failed");
  return unmet;
}

function pinnedResolver(name: string, addr: string): (host: string) => Promise<string> {
  return async (host) => {
    if (host !== name) throw new Error(`no address for ${host} in this test (only ${name} is pinned)`);
    return addr;
  };
}

/** --deployed: deploy, run this CLI again inside the stack's namespace against Traefik, tear down. */
async function runDeployed(say: (s: string) => void): Promise<number> {
  const started = Date.now();
  const stack = await deployLocalStack((l) => say(`# ${l}`));
  try {
    if (stack.up.status !== 0) {
      say(stack.up.out.slice(-6000));
      say("# pulumi up of the local stack failed");
      return 1;
    }
    say(`# deployed in ${Math.round((Date.now() - started) / 1000)} s: ${JSON.stringify(stack.up.summary)}`);
    const host = `${LOCAL.serverName}`;
    // The stack's outputs as `pulumi stack output --json` gives them (secrets masked), for the self-check.
    const outputsFile = path.join(path.dirname(stack.dir), "outputs.json");
    writeFileSync(outputsFile, JSON.stringify(stack.up.outputs ?? {}));
    const r = await stack.node.exec(
      [
        // nsenter starts in /: tsx resolves from the repository.
        "/usr/bin/env", "-C", path.resolve(__dirname, "../.."), process.execPath, "--import", "tsx", path.join(__dirname, "cli.ts"),
        "--client-url", `https://${host}:${LOCAL.httpsPort}`, "--server-name", LOCAL.serverName,
        "--traefik-http-url", `http://${host}:${LOCAL.httpPort}`, "--pin", "127.0.0.1", "--restart-services", "--self-check-outputs", outputsFile,
      ],
      { timeoutMs: 20 * 60_000, env: { PATH: `${path.dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin` } },
    );
    say(r.stdout.trimEnd());
    if (r.stderr.trim()) say(r.stderr.trimEnd());
    if (r.code !== 0) {
      for (const service of ["traefik", "dendrite", "socket-proxy"]) {
        const logs = await stack.node.docker(["service", "logs", "--raw", "--tail", "40", service], { timeoutMs: 30_000 });
        say(`--- ${service} log tail ---\n${logs.stdout}${logs.stderr}`);
      }
    }
    return r.code === 0 ? 0 : 1;
  } finally {
    const left = stack.stop();
    say(`# torn down${left.length > 0 ? `; LEFT BEHIND: ${left.join(", ")}` : ""} after ${Math.round((Date.now() - started) / 1000)} s`);
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
