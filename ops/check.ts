/**
 * Post-deploy self-check, run by the operator after `pulumi up`: `npm run check -- --stack NAME`.
 * One line per check, and for each failure what to do. Anchor: matrix-docker-ansible-deploy's
 * `self-check` (client and federation endpoints, well-known, certificates).
 *
 * It reads the stack outputs (matrixUrl, serverName, turnUris) like ops/users.ts, and talks to the
 * public endpoints only, as any client would. TURN needs an access token (any user's): --token-file.
 */
import { spawnSync } from "node:child_process";
import { lookup } from "node:dns/promises";
import { existsSync, readFileSync } from "node:fs";
import { connect as tlsConnect } from "node:tls";
import { parseArgs } from "node:util";
import { parse as parseYaml } from "yaml";
import { TAG_DATABASE, TAG_MEDIA } from "../components/render/backup";
import { parseTurnUri, TurnClient } from "./turnClient";

export interface CheckInput {
  /** Client API base URL (stack output matrixUrl). */
  clientUrl: string;
  /** What /.well-known/matrix/client must name; default clientUrl. Differs only when the stack's URL is reached at another address. */
  expectedBaseUrl?: string;
  serverName: string;
  /** "closed": federation is off and must stay unanswered; otherwise the federation base URL is checked. */
  federation: { mode: "open" | "allowlist" | "closed"; url?: string };
  /** Stack output turnUris; empty: TURN is off. */
  turnUris: string[];
  /** Any user's access token, for /voip/turnServer. */
  accessToken?: string;
  /** Extra CA (PEM) to trust, e.g. a local stack's own certificate. */
  ca?: string;
  /**
   * false: the stack obtains no certificate (acmeCa "none", the local target): Traefik serves its own
   * self-signed default, which names no host; the HTTPS check then reports what is served and skips.
   */
  acme?: boolean;
  /** Fail a certificate with fewer days left (Traefik renews Let's Encrypt certificates 30 days before expiry). */
  minCertDays?: number;
  timeoutMs?: number;
  /** IPv4 address of a host named in a TURN URI; default the system resolver. */
  resolve?: (host: string) => Promise<string>;
  /** The backup repository (stack outputs backupRepository, backupRepositoryPassword, backupS3*); absent: not checked. */
  backup?: BackupTarget;
}

export interface BackupTarget {
  repository: string;
  password: string;
  s3?: { accessKeyId: string; secretAccessKey: string };
  /** backupIntervalHours: the newest database snapshot may be this old plus an hour, as the backup service's own health allows. */
  intervalHours: number;
  /** The restic binary; default `restic` on PATH. */
  restic?: string;
}

export interface CheckResult {
  name: string;
  status: "ok" | "failed" | "skipped";
  detail: string;
  /** What to do when it failed. */
  fix?: string;
}

class Failed extends Error {
  constructor(message: string, readonly fix: string) {
    super(message);
  }
}

async function get(url: string, timeoutMs: number, headers: Record<string, string> = {}, method = "GET"): Promise<{ status: number; json?: Record<string, unknown>; text: string }> {
  const r = await fetch(url, { method, headers, redirect: "manual", signal: AbortSignal.timeout(timeoutMs) });
  const text = await r.text();
  try {
    return { status: r.status, json: JSON.parse(text) as Record<string, unknown>, text };
  } catch {
    return { status: r.status, text };
  }
}

/** Days until the certificate a TLS server presents expires; throws when it is not trusted or does not match (unless verify is false). */
function certificateDays(host: string, port: number, servername: string, ca: string | undefined, timeoutMs: number, verify = true): Promise<{ days: number; subject: string }> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host, port, servername, ...(ca ? { ca } : {}), rejectUnauthorized: verify, timeout: timeoutMs }, () => {
      const cert = s.getPeerCertificate();
      s.end();
      resolve({ days: Math.floor((new Date(cert.valid_to).getTime() - Date.now()) / 86_400_000), subject: String(cert.subject?.CN ?? "") });
    });
    s.on("error", reject);
    s.on("timeout", () => {
      s.destroy();
      reject(new Error(`no TLS handshake within ${timeoutMs} ms`));
    });
  });
}

export async function runChecks(i: CheckInput): Promise<CheckResult[]> {
  const timeout = i.timeoutMs ?? 10_000;
  const minDays = i.minCertDays ?? 14;
  const client = i.clientUrl.replace(/\/+$/, "");
  const clientUrl = new URL(client);
  const expected = (i.expectedBaseUrl ?? client).replace(/\/+$/, "");
  const checks: { name: string; run: () => Promise<string | { skip: string }> }[] = [];

  const certCheck = (name: string, host: string, port: number, servername: string, fix: string) =>
    checks.push({
      name,
      run: async () => {
        let r: { days: number; subject: string };
        try {
          r = await certificateDays(i.resolve ? await i.resolve(host) : host, port, servername, i.ca, timeout);
        } catch (e) {
          throw new Failed(`${host}:${port} (SNI ${servername}): ${(e as Error).message}`, fix);
        }
        if (r.days < minDays) throw new Failed(`expires in ${r.days} days (< ${minDays})`, `renewal is stuck: ${fix}`);
        return `${r.days} days left (CN ${r.subject})`;
      },
    });

  checks.push({
    name: "client API (/_matrix/client/versions)",
    run: async () => {
      let r;
      try {
        r = await get(`${client}/_matrix/client/versions`, timeout);
      } catch (e) {
        throw new Failed(`${client}: ${(e as Error).message}`, "is the edge up? `docker service ps traefik dendrite`, then `docker service logs dendrite`; check DNS for the Matrix host and the firewall on 443");
      }
      if (r.status !== 200 || !Array.isArray(r.json?.versions)) {
        throw new Failed(`${r.status}: ${r.text.slice(0, 120)}`, "Traefik answers but Dendrite does not: `docker service ps dendrite`, `docker service logs dendrite` (database reachable? config secret mounted?)");
      }
      return `${r.status}, ${(r.json.versions as string[]).slice(-1)[0]}`;
    },
  });

  checks.push({
    name: "well-known client discovery matches the server",
    run: async () => {
      // Clients look at https://<server name>/.well-known/matrix/client; this stack also serves it on the Matrix host.
      // The stack's own URL is reached at clientUrl (the same unless an address was given to reach it at).
      const serverHost = i.serverName.replace(/:\d+$/, "");
      const origins = [clientUrl.origin, ...(serverHost !== new URL(expected).hostname ? [`https://${serverHost}`] : [])];
      const seen: string[] = [];
      for (const o of origins) {
        let r;
        try {
          r = await get(`${o}/.well-known/matrix/client`, timeout);
        } catch (e) {
          throw new Failed(`${o}: ${(e as Error).message}`, "the server name's host must answer on 443 with /.well-known/matrix/client (DNS for the server name, the well-known router)");
        }
        const base = (r.json?.["m.homeserver"] as { base_url?: string } | undefined)?.base_url?.replace(/\/+$/, "");
        if (r.status !== 200 || base !== expected) {
          throw new Failed(`${o} says m.homeserver.base_url ${JSON.stringify(base)} (${r.status}); the stack's client URL is ${expected}`, "Dendrite's global.well_known_client_name must be the Matrix URL: redeploy (`pulumi up`) so the config secret is current");
        }
        seen.push(o);
      }
      return `base_url ${expected} at ${seen.join(", ")}`;
    },
  });

  checks.push({
    name: "federation endpoint",
    run: async () => {
      if (i.federation.mode === "closed") {
        // Closed: the federation API must not answer on the client host either.
        const r = await get(`${client}/_matrix/federation/v1/version`, timeout).catch(() => ({ status: 0, text: "" }));
        if (r.status === 200) throw new Failed(`${client}/_matrix/federation/v1/version answered 200 on a closed stack`, "the client router must not route /_matrix/federation/: check the Traefik labels of dendrite");
        return { skip: "federation is closed on this stack (and not answering on the client host)" };
      }
      const url = (i.federation.url ?? `https://${i.serverName.replace(/:\d+$/, "")}:8448`).replace(/\/+$/, "");
      let r;
      try {
        r = await get(`${url}/_matrix/key/v2/server`, timeout);
      } catch (e) {
        throw new Failed(`${url}: ${(e as Error).message}`, "other servers cannot reach us: port 8448 open in the firewall? `docker service ps traefik`; the federation entrypoint");
      }
      if (r.status !== 200 || r.json?.server_name !== i.serverName) {
        throw new Failed(`${url}/_matrix/key/v2/server: ${r.status}, server_name ${JSON.stringify(r.json?.server_name)}`, "the key endpoint must name this server: check Dendrite's global.server_name and the federation router");
      }
      return `${url} serves keys for ${i.serverName}`;
    },
  });

  if (clientUrl.protocol === "https:" && i.acme === false) {
    checks.push({
      name: "HTTPS certificate (client API)",
      run: async () => {
        const host = i.resolve ? await i.resolve(clientUrl.hostname) : clientUrl.hostname;
        const r = await certificateDays(host, Number(clientUrl.port || 443), clientUrl.hostname, undefined, timeout, false).catch((e: Error) => {
          throw new Failed(`${clientUrl.host}: ${e.message}`, "Traefik does not answer TLS: `docker service ps traefik`, `docker service logs traefik`");
        });
        return { skip: `no ACME on this stack (acmeCa none): Traefik serves its self-signed default (CN ${r.subject}, ${r.days} days), which no client trusts` };
      },
    });
  } else if (clientUrl.protocol === "https:") {
    certCheck("HTTPS certificate (client API)", clientUrl.hostname, Number(clientUrl.port || 443), clientUrl.hostname, "`docker service logs traefik | grep -i acme`: DNS token valid? rate limited? the ACME volume writable?");
  } else {
    checks.push({ name: "HTTPS certificate (client API)", run: async () => ({ skip: `${client} is plain HTTP (no TLS to check)` }) });
  }
  if (i.federation.mode !== "closed") {
    const f = new URL(i.federation.url ?? `https://${i.serverName.replace(/:\d+$/, "")}:8448`);
    certCheck("federation certificate", f.hostname, Number(f.port || 443), i.serverName.replace(/:\d+$/, ""), "remote servers demand a valid certificate for the server name: `docker service logs traefik | grep -i acme`");
  }
  const turnsUri = i.turnUris.map(parseTurnUri).find((u) => u.scheme === "turns");
  if (turnsUri) certCheck("TURN TLS certificate", turnsUri.host, turnsUri.port, turnsUri.host, "coTURN reads the certificate the turn-cert service copies from Traefik: `docker service logs turn-cert`, then restart coturn");

  checks.push({
    name: "TURN credentials and an allocation",
    run: async () => {
      if (i.turnUris.length === 0) return { skip: "TURN is off on this stack" };
      if (!i.accessToken) return { skip: "give --token-file (any user's access token) to check /voip/turnServer and an allocation" };
      const r = await get(`${client}/_matrix/client/v3/voip/turnServer`, timeout, { Authorization: `Bearer ${i.accessToken}` });
      const creds = r.json as { uris?: string[]; username?: string; password?: string } | undefined;
      if (r.status !== 200 || !creds?.uris?.length || !creds.username || !creds.password) {
        throw new Failed(`/voip/turnServer: ${r.status} ${r.text.slice(0, 120)}`, "Dendrite hands out no TURN server: client_api.turn needs turn_uris, turn_user_lifetime and turn_shared_secret (redeploy); a 401 means the token is wrong");
      }
      const uri = creds.uris.map(parseTurnUri).find((u) => u.scheme === "turn" && u.transport === "udp");
      if (!uri) throw new Failed(`no turn:...?transport=udp among ${creds.uris.join(", ")}`, "the rendered turn_uris lack the UDP URI");
      const host = i.resolve ? await i.resolve(uri.host) : (await lookup(uri.host, { family: 4 })).address;
      const c = new TurnClient({ host, port: uri.port }, { username: creds.username, password: creds.password }, timeout);
      try {
        const a = await c.allocate();
        if (a.cls !== "success" || !a.relayed) {
          throw new Failed(`Allocate at ${host}:${uri.port}: ${a.errorCode ?? ""} ${a.errorReason ?? ""}`, a.errorCode === 401 ? "coTURN's static-auth-secret differs from Dendrite's turn_shared_secret: redeploy both from the same secret" : "coTURN refuses: `docker service logs coturn` (quota? relay ports?)");
        }
        await c.release().catch(() => undefined);
        return `credentials from Dendrite, relay ${a.relayed.host}:${a.relayed.port} allocated at ${host}:${uri.port}`;
      } catch (e) {
        if (e instanceof Failed) throw e;
        throw new Failed(`${host}:${uri.port}/udp: ${(e as Error).message}`, "coTURN does not answer: `docker service ps coturn`; UDP 3478 and the relay range open in the firewall");
      } finally {
        c.close();
      }
    },
  });

  checks.push({
    name: "admin paths closed (/_dendrite/, /_synapse/)",
    run: async () => {
      const open: string[] = [];
      for (const path of ["/_synapse/admin/v1/register", "/_dendrite/admin/evacuateUser/@nobody:invalid", "/_dendrite/monitor/up"]) {
        const r = await get(`${client}${path}`, timeout).catch((e: Error) => ({ status: -1, text: e.message, json: undefined }));
        if (r.status !== 404 && r.status !== -1) open.push(`${path} ${r.status}${r.json && "nonce" in r.json ? " (hands out a registration nonce)" : ""}`);
      }
      if (open.length > 0) throw new Failed(`answered: ${open.join("; ")}`, "Dendrite's admin API is reachable from outside: only the Matrix prefixes may be routed (components/render/dendriteRoutes.ts); is something publishing Dendrite's port 8008?");
      return "404 from the edge";
    },
  });

  checks.push({ name: "backup freshness", run: async () => (i.backup ? backupFreshness(i.backup, timeout) : { skip: "not asked (give --backup: it reads the repository password from the stack) or backups are off" }) });

  const results: CheckResult[] = [];
  for (const c of checks) {
    try {
      const r = await c.run();
      results.push(typeof r === "string" ? { name: c.name, status: "ok", detail: r } : { name: c.name, status: "skipped", detail: r.skip });
    } catch (e) {
      results.push(e instanceof Failed ? { name: c.name, status: "failed", detail: e.message, fix: e.fix } : { name: c.name, status: "failed", detail: `unexpected: ${(e as Error).message}`, fix: "run again; if it repeats, report it with this line" });
    }
  }
  return results;
}

/** The newest snapshot of each kind the backup service writes (components/render/backup.ts tags), read with restic itself. */
function backupFreshness(b: BackupTarget, timeoutMs: number): string | { skip: string } {
  const restic = b.restic ?? "restic";
  const fix = "`docker service ps backup` and `docker service logs backup` say why the backups fail";
  const newest = (tag: string): { id: string; time: number } | undefined => {
    // The password on stdin (restic reads it there when stdin is not a terminal), never in an environment
    // variable or a file; only what restic needs is passed on (an operator's own RESTIC_* must not interfere).
    const r = spawnSync(restic, ["snapshots", "--json", "--no-lock", "--no-cache", "--tag", tag], {
      input: `${b.password}\n`,
      encoding: "utf8",
      timeout: Math.max(timeoutMs, 60_000),
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: process.env.HOME ?? "/",
        RESTIC_REPOSITORY: b.repository,
        ...(b.s3 ? { AWS_ACCESS_KEY_ID: b.s3.accessKeyId, AWS_SECRET_ACCESS_KEY: b.s3.secretAccessKey } : {}),
      },
    });
    if ((r.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT") throw new Skip(`${restic} is not installed here: install restic to check the backups`);
    if (r.status !== 0) {
      const why = (r.stderr || r.error?.message || "").trim().split("\n").filter((l) => !/reading repository password/.test(l)).pop() ?? "";
      throw new Failed(`restic snapshots on ${b.repository}: ${why}`, /wrong password|no key found/i.test(why) ? "the password is not this repository's: stack output backupRepositoryPassword" : `the repository URL and S3 key (stack outputs backupRepository, backupS3AccessKeyId); ${fix}`);
    }
    // restic 0.14 prints "reading repository password from stdin" on stdout before the JSON, even with --json.
    const json = r.stdout.split("\n").find((l) => l.startsWith("[")) ?? "[]";
    const list = JSON.parse(json) as { short_id: string; time: string }[];
    return list.map((x) => ({ id: x.short_id, time: Date.parse(x.time) })).sort((a, z) => z.time - a.time)[0];
  };
  try {
    const db = newest(TAG_DATABASE);
    if (!db) throw new Failed(`no database snapshot in ${b.repository}`, `the first backup runs right after the deploy: ${fix}`);
    const hours = (Date.now() - db.time) / 3_600_000;
    const limit = b.intervalHours + 1;
    if (hours > limit) throw new Failed(`the newest database snapshot (${db.id}) is ${hours.toFixed(1)} h old, more than the interval plus an hour (${limit} h)`, fix);
    const media = newest(TAG_MEDIA);
    const mediaAge = media ? `media ${media.id} ${((Date.now() - media.time) / 3_600_000).toFixed(1)} h old` : "no media snapshot (none until the first upload)";
    return `database ${db.id} ${hours.toFixed(1)} h old (limit ${limit} h); ${mediaAge}`;
  } catch (e) {
    if (e instanceof Skip) return { skip: e.message };
    throw e;
  }
}

class Skip extends Error {}

export function formatCheck(r: CheckResult): string {
  const tag = r.status === "ok" ? "ok  " : r.status === "skipped" ? "skip" : "FAIL";
  return `${tag} ${r.name}: ${r.detail}${r.fix ? `\n     -> ${r.fix}` : ""}`;
}

/** The backup repository from the stack's outputs (with secrets shown). */
export function backupTarget(outputs: Record<string, unknown>, intervalHours: number): BackupTarget {
  const str = (k: string) => (typeof outputs[k] === "string" && outputs[k] !== "[secret]" ? (outputs[k] as string) : undefined);
  const repository = str("backupRepository");
  const password = str("backupRepositoryPassword");
  if (!repository || !password) throw new Error("--backup: the stack has no backupRepository/backupRepositoryPassword output (backups off, or the outputs were read without --show-secrets)");
  const accessKeyId = str("backupS3AccessKeyId");
  const secretAccessKey = str("backupS3SecretAccessKey");
  return { repository, password, intervalHours, ...(accessKeyId && secretAccessKey ? { s3: { accessKeyId, secretAccessKey } } : {}) };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      stack: { type: "string", short: "s" },
      outputs: { type: "string" },
      "client-url": { type: "string" },
      "server-name": { type: "string" },
      federation: { type: "string" },
      "federation-url": { type: "string" },
      "token-file": { type: "string" },
      ca: { type: "string" },
      backup: { type: "boolean", default: false },
    },
    // --client-url: reach the client API at this address instead of the stack's matrixUrl (which
    // /.well-known must still name), e.g. the host stack of `npm run e2e -- --keep`.
  });
  if (!values.stack) {
    process.stderr.write("usage: npm run check -- --stack NAME [--token-file FILE] [--ca PEM] [--backup]\n");
    return 2;
  }
  const outputs = values.outputs
    ? (JSON.parse(readFileSync(values.outputs, "utf8")) as Record<string, unknown>)
    : values["client-url"]
      ? {}
      : // --backup: the repository password is a secret output; it stays in this process and goes to restic on stdin.
        (JSON.parse(spawnSync("npx", ["pulumi", "stack", "output", "--json", "--stack", values.stack, ...(values.backup ? ["--show-secrets"] : [])], { encoding: "utf8" }).stdout || "{}") as Record<string, unknown>);
  const stackFile = `Pulumi.${values.stack}.yaml`;
  const stackConfig = existsSync(stackFile) ? ((parseYaml(readFileSync(stackFile, "utf8")) as { config?: Record<string, unknown> })?.config ?? {}) : {};
  const mode = values.federation ?? String(stackConfig["hardened-matrix:federationMode"] ?? "closed");
  if (!["open", "allowlist", "closed"].includes(mode)) throw new Error(`--federation must be open, allowlist or closed, got ${mode}`);
  const clientUrl = values["client-url"] ?? (outputs.matrixUrl as string | undefined);
  const serverName = values["server-name"] ?? (outputs.serverName as string | undefined);
  if (!clientUrl || !serverName) throw new Error("no matrixUrl/serverName: run `pulumi up` first, or give --client-url and --server-name");
  const results = await runChecks({
    clientUrl,
    expectedBaseUrl: (outputs.matrixUrl as string | undefined) ?? clientUrl,
    serverName,
    federation: { mode: mode as CheckInput["federation"]["mode"], ...(values["federation-url"] ? { url: values["federation-url"] } : {}) },
    turnUris: Array.isArray(outputs.turnUris) ? (outputs.turnUris as string[]) : [],
    ...(values["token-file"] ? { accessToken: readFileSync(values["token-file"], "utf8").trim() } : {}),
    ...(values.ca ? { ca: readFileSync(values.ca, "utf8") } : {}),
    acme: String(stackConfig["hardened-matrix:acmeCa"] ?? "letsencrypt") !== "none",
    ...(values.backup ? { backup: backupTarget(outputs, Number(stackConfig["hardened-matrix:backupIntervalHours"] ?? 6)) } : {}),
  });
  for (const r of results) process.stdout.write(`${formatCheck(r)}\n`);
  const failed = results.filter((r) => r.status === "failed");
  process.stdout.write(`${results.length - failed.length} of ${results.length} passed or skipped${failed.length ? `; failed: ${failed.map((r) => r.name).join(", ")}` : ""}\n`);
  return failed.length > 0 ? 1 : 0;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
