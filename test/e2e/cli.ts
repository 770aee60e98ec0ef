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
 *   ... --pin ADDR                    (with --client-url) send the server name's requests to ADDR and trust
 *                                     exactly the certificate served there (pinned); --restart-services
 *                                     restarts every service of the engine at DOCKER_HOST for the restart step
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { createAccounts } from "../../ops/users";
import { deployLocalStack, LOCAL, pinStack, restartServices, waitForRoutes } from "./deployed";
import { startHostStack, type HostStack } from "./hostStack";
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
  let repin: (() => Promise<string>) | undefined;
  if (values.pin) {
    const u = new URL(values["client-url"] ?? "");
    repin = await pinStack(u.hostname, values.pin, Number(u.port || 443));
    say(`# Traefik routes the client API after ${await waitForRoutes(u.origin)} ms`);
  }
  if (values["client-url"]) {
    if (!values["server-name"]) throw new Error("--client-url needs --server-name");
    target = {
      clientBaseUrl: values["client-url"],
      serverName: values["server-name"],
      wellKnownBaseUrl: values["well-known"] ?? values["client-url"],
      ...(values["traefik-http-url"] ? { traefik: { httpUrl: values["traefik-http-url"] } } : {}),
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
              // Traefik makes a new self-signed default certificate at every start: trust the new one.
              if (repin) say(`# re-pinned the served certificate after the restart: ${await repin()}`);
              if (values["client-url"]) say(`# Traefik routes the client API again after ${await waitForRoutes(values["client-url"])} ms`);
            },
          }
        : {}),
    };
  } else {
    stack = await startHostStack({ log: (l) => say(`# ${l}`) });
    say("# adaptations of the rendered files to this host:");
    for (const a of stack.adaptations) say(`#   ${a}`);
    target = {
      clientBaseUrl: stack.clientBaseUrl,
      serverName: stack.serverName,
      wellKnownBaseUrl: stack.wellKnownBaseUrl,
      register: stack.register,
      adminPath: { dendriteUrl: stack.clientBaseUrl },
      turnPeerHost: "127.0.0.1",
      turnDeniedPeers: ["10.0.0.1", "127.0.0.2"],
      ...(values["no-restart"] ? {} : { restart: stack.restartAll }),
    };
  }
  let failed = 0;
  try {
    const results = await runScenario(target, (r) => say(formatResult(r)));
    failed = results.filter((r) => r.status === "failed").length;
    say(`${results.filter((r) => r.status === "ok").length} ok, ${failed} failed, ${results.filter((r) => r.status === "skipped").length} skipped`);
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
    const r = await stack.node.exec(
      [
        // nsenter starts in /: tsx resolves from the repository.
        "/usr/bin/env", "-C", path.resolve(__dirname, "../.."), process.execPath, "--import", "tsx", path.join(__dirname, "cli.ts"),
        "--client-url", `https://${host}:${LOCAL.httpsPort}`, "--server-name", LOCAL.serverName,
        "--traefik-http-url", `http://${host}:${LOCAL.httpPort}`, "--pin", "127.0.0.1", "--restart-services",
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
