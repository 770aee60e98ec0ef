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
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { createAccounts } from "../../ops/users";
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
    },
  });
  const say = (s: string) => process.stdout.write(`${s}\n`);
  let stack: HostStack | undefined;
  let target: ScenarioTarget;
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
      say(`TURN: 127.0.0.1:${stack.turn.port}/udp. Ctrl-C stops everything and deletes ${stack.dir}.`);
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

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
