import { X509Certificate, createPrivateKey } from "node:crypto";

/**
 * TURN over TLS with a certificate that renews itself: a lego loop (the `turn-cert` service) obtains
 * and renews the certificate by ACME DNS-01, and a wrapper around turnserver (in the coturn service)
 * reloads it when it changes. Both are POSIX sh: busybox ash in goacme/lego (Alpine, buildx.Dockerfile)
 * and dash in coturn/coturn (debian:*-slim, docker/coturn/debian/Dockerfile). Pure renderers, run for
 * real in test/turnCert.real.test.ts.
 */

/** Renew at 30 days left, as Let's Encrypt advises for 90-day certificates (and lego's own default). */
export const TURN_CERT_RENEW_DAYS = 30;
/** Twice a day, as Let's Encrypt advises; the phase is the task's start time, so clients do not renew in step. */
export const TURN_CERT_CHECK_SECONDS = 12 * 3600;
/** After a failure: an hour keeps well inside Let's Encrypt's 5 failed validations per hostname per hour. */
export const TURN_CERT_RETRY_SECONDS = 3600;
/** lego's own timeouts are shorter (DNS propagation 2 min, certificate 30 s); this bounds a hung run. */
export const TURN_CERT_LEGO_TIMEOUT_SECONDS = 600;
/** Heartbeat age the healthcheck accepts: longer than one lego run, shorter than a stuck loop. */
export const TURN_CERT_HEARTBEAT_MINUTES = 15;

export interface TurnCertScriptConfig {
  /** The TURN host name the certificate is for. */
  domain: string;
  email: string;
  /** ACME directory URL. */
  server: string;
  /** lego's `--path` (account key, certificates). */
  statePath: string;
  /** Certificate chain and key in one PEM file, where coturn reads it (`cert` and `pkey`). */
  livePem: string;
  /** Touched by the loop; the healthcheck reads its age. */
  heartbeatFile: string;
  /** lego's DNS provider (`--dns`) and extra flags for it; its credentials come from the environment. */
  dns: { provider: string; flags?: string[] };
  renewDays?: number;
  checkSeconds?: number;
  retrySeconds?: number;
  /** /lego in goacme/lego (buildx.Dockerfile: COPY lego /, ENTRYPOINT ["/lego"]). */
  legoPath?: string;
}

export interface TurnserverRunConfig {
  configFile: string;
  /** The combined PEM the turn-cert service installs. */
  certFile: string;
  pollSeconds?: number;
  /** The image installs it with --prefix=/usr (docker/coturn/debian/Dockerfile; see coturn.ts). */
  turnserverPath?: string;
}

const hostName = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/;
const safePath = /^\/[A-Za-z0-9._\/-]+$/;
const safeWord = /^[A-Za-z0-9._:\/@=+-]+$/;

function positive(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new Error(`turn-cert: ${name} must be a positive integer, got ${v}`);
  return v;
}

function path(name: string, v: string): string {
  if (!safePath.test(v)) throw new Error(`turn-cert: ${name} must be an absolute path of safe characters, got "${v}"`);
  return v;
}

function word(name: string, v: string): string {
  if (!safeWord.test(v)) throw new Error(`turn-cert: ${name} has characters a shell would read, got "${v}"`);
  return v;
}

/** The lego loop: obtain once, then renew at `renewDays` left; install a changed certificate atomically. */
export function renderTurnCertScript(c: TurnCertScriptConfig): string {
  if (!hostName.test(c.domain)) throw new Error(`turn-cert: domain must be a DNS name, got "${c.domain}"`);
  if (!/^[^\s'"\\$`]+@[^\s'"\\$`]+$/.test(c.email)) throw new Error(`turn-cert: email must be an address, got "${c.email}"`);
  if (!/^https:\/\/[A-Za-z0-9.:\/_-]+$/.test(c.server)) throw new Error(`turn-cert: server must be an https ACME directory URL, got "${c.server}"`);
  const renewDays = positive("renewDays", c.renewDays ?? TURN_CERT_RENEW_DAYS);
  const check = positive("checkSeconds", c.checkSeconds ?? TURN_CERT_CHECK_SECONDS);
  const retry = positive("retrySeconds", c.retrySeconds ?? TURN_CERT_RETRY_SECONDS);
  const lego = path("legoPath", c.legoPath ?? "/lego");
  const dnsFlags = [`--dns ${word("dns.provider", c.dns.provider)}`, ...(c.dns.flags ?? []).map((f) => word("dns.flags", f))].join(" ");
  // lego names its files after the domain (certcrypto: a wildcard's * becomes _; none here).
  const certs = `${path("statePath", c.statePath)}/certificates/${c.domain}`;
  return `#!/bin/sh
# TURN certificate for ${c.domain}: obtained and renewed by lego (ACME DNS-01), rendered by hardened-matrix.
set -u
umask 027
state='${c.statePath}'
live='${path("livePem", c.livePem)}'
heartbeat='${path("heartbeatFile", c.heartbeatFile)}'
trap 'exit 0' TERM INT

beat() { : > "$heartbeat"; }

# Sleeps in steps of at most a minute, beating, and wakes on TERM (wait returns for a trapped signal).
pause() {
  left=$1
  while [ "$left" -gt 0 ]; do
    beat
    step=60
    if [ "$left" -lt 60 ]; then step=$left; fi
    sleep "$step" &
    wait $!
    left=$((left - step))
  done
}

acme() {
  beat
  timeout ${TURN_CERT_LEGO_TIMEOUT_SECONDS} ${lego} --accept-tos --email '${c.email}' --server '${c.server}' --path "$state" \\
    --domains '${c.domain}' --key-type ec256 --pem ${dnsFlags} "$@" &
  wait $!
}

# coturn reads chain and key from one file (cert= and pkey=), so one rename swaps both at once.
install_live() {
  src='${certs}.pem'
  if [ ! -s "$src" ] || cmp -s "$src" "$live"; then return 0; fi
  # cat, not cp: the new file gets 0640 from the umask (cp would copy lego's 0600), so coturn's group reads it.
  cat "$src" > "$live.new" && mv -f "$live.new" "$live" && echo "turn-cert: installed a new certificate for coturn"
}

mkdir -p "$state" "\${live%/*}"
while :; do
  if [ -s '${certs}.crt' ]; then
    # lego renews only inside the window; its random pre-renewal sleep is for cron jobs, this loop has its own phase.
    acme renew --days ${renewDays} --no-random-sleep
  else
    acme run
  fi
  rc=$?
  install_live || rc=1
  if [ "$rc" -eq 0 ]; then
    pause ${check}
  else
    echo "turn-cert: lego or the install failed (exit $rc); retrying in ${retry} s" >&2
    pause ${retry}
  fi
done
`;
}

/**
 * turnserver under a watcher: SIGUSR2 makes coturn reload its certificate and key without closing a
 * listener (coturn/coturn src/apps/relay/mainrelay.c reload_ssl_certs, in 4.6.1 and 4.17). A
 * certificate missing at start turns TLS off for the life of the process (mainrelay.c: a cert file
 * that cannot be read sets no_tls and no_dtls), so its first appearance restarts turnserver instead.
 */
export function renderTurnserverRun(c: TurnserverRunConfig): string {
  const poll = positive("pollSeconds", c.pollSeconds ?? 60);
  return `#!/bin/sh
# coturn with a certificate that is renewed under it, rendered by hardened-matrix.
set -u
conf='${path("configFile", c.configFile)}'
cert='${path("certFile", c.certFile)}'
pid=''

# The content, not the time: a renewal is a new file moved into place.
sum() { if [ -r "$cert" ]; then cksum < "$cert"; fi; }

start() {
  seen=$(sum)
  if [ -z "$seen" ]; then echo "turn: no certificate yet at $cert: plain TURN only until it appears"; fi
  ${path("turnserverPath", c.turnserverPath ?? "/usr/bin/turnserver")} -c "$conf" &
  pid=$!
}

stop() {
  kill -TERM "$pid" 2>/dev/null
  wait "$pid"
}

trap 'stop; exit 0' TERM INT
start
while :; do
  sleep ${poll} &
  wait $!
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid"
    rc=$?
    echo "turn: turnserver exited ($rc)" >&2
    exit "$rc"
  fi
  now=$(sum)
  if [ -z "$now" ] || [ "$now" = "$seen" ]; then continue; fi
  if [ -z "$seen" ]; then
    echo "turn: certificate appeared: restarting turnserver to open its TLS listeners"
    stop
    start
  else
    echo "turn: certificate changed: reloading it (SIGUSR2 to turnserver $pid)"
    seen=$now
    kill -USR2 "$pid"
  fi
done
`;
}

/** What a static TURN certificate (turnTlsCertPem/turnTlsKeyPem) says about itself at plan time. */
export interface StaticCertCheck {
  problems: string[];
  warnings: string[];
}

/**
 * Checks an operator's own certificate: parsable, matching its key, naming the TURN host, and not
 * expired. Within `warnDays` of expiry it warns: nothing renews a static certificate. A value that is
 * not PEM at all (the offline plan's stand-in for an encrypted secret) cannot be checked: a warning.
 */
export function checkStaticTurnCert(certPem: string, keyPem: string, host: string, now: Date, warnDays = TURN_CERT_RENEW_DAYS): StaticCertCheck {
  const problems: string[] = [];
  const warnings: string[] = [];
  if (!certPem.includes("-----BEGIN") || !keyPem.includes("-----BEGIN")) {
    warnings.push("turnTlsCertPem/turnTlsKeyPem: not PEM here, so the certificate's name, key and expiry were not checked");
    return { problems, warnings };
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (e) {
    return { problems: [`turnTlsCertPem: is not a PEM certificate (${(e as Error).message})`], warnings };
  }
  try {
    if (!cert.checkPrivateKey(createPrivateKey(keyPem))) problems.push("turnTlsKeyPem: is not the key of turnTlsCertPem");
  } catch (e) {
    problems.push(`turnTlsKeyPem: is not a PEM private key (${(e as Error).message})`);
  }
  if (cert.checkHost(host) === undefined) problems.push(`turnTlsCertPem: does not name the TURN host ${host} (subject ${cert.subject.replace(/\n/g, ", ")})`);
  const notAfter = new Date(cert.validTo);
  const daysLeft = Math.floor((notAfter.getTime() - now.getTime()) / 86_400_000);
  if (notAfter.getTime() <= now.getTime()) {
    problems.push(`turnTlsCertPem: expired on ${notAfter.toISOString()}; replace it, or set turnTls to acme to have it renewed`);
  } else if (daysLeft < warnDays) {
    warnings.push(`turnTlsCertPem: expires on ${notAfter.toISOString()} (${daysLeft} days left) and nothing renews it; replace it, or set turnTls to acme`);
  }
  return { problems, warnings };
}
