import { constants, generateKeyPairSync, privateDecrypt } from "node:crypto";

/**
 * The Headscale bootstrap, without SSH and without a person copying a key. Headscale 0.29 creates
 * keys only through its CLI or API once it runs (FACTS.md), so at first boot the control node:
 *   1. waits until Headscale answers on its unix socket (no auth needed there),
 *   2. creates the admins' users (email set, so the policy's email tokens resolve) and one API key,
 *   3. seals the key to Pulumi's public key (RSA-OAEP, SHA-256, with Debian's openssl),
 *   4. serves only the sealed blob on port 80 for a bounded window, then deletes it.
 * Pulumi holds the private half as a secret in state and opens the blob (`openSealedApiKey`).
 * Anyone may fetch the blob: without the private key it is noise. The key never reaches user data,
 * the cloud API or a log; a stolen blob is useless, and a forged one fails on first API use.
 */

export interface BootstrapScriptInput {
  /** PEM (SPKI) of the RSA key Pulumi generated; the private half stays in state. */
  sealingPublicKeyPem: string;
  /** Admin emails: each gets a Headscale user named after the email's local part, carrying the email. */
  admins: string[];
  /** API key lifetime, as `headscale apikeys create -e` takes it (Prometheus duration, e.g. 90d). */
  apiKeyExpiry: string;
  /** How long the sealed blob is served, in seconds. */
  windowSeconds: number;
  /** Where the blob is served. On the node: 0.0.0.0:80. */
  bindAddress: string;
  port: number;
  /** Root-only directory of the bootstrap's own state. */
  stateDir: string;
}

/** The path Pulumi fetches: http://<node>:<port>/<BLOB_NAME>. */
export const BLOB_NAME = "sealed-api-key.bin";
/**
 * cmd/headscale/cli/api_key.go: `headscale apikeys create` prints the key. hscontrol/db/api_key.go
 * CreateAPIKey: "hskey-api-" + 12 + "-" + 64 characters of util.GenerateRandomStringURLSafe, i.e.
 * base64url (hscontrol/util/string.go), so `-` and `_` occur inside the prefix and the secret.
 */
export const API_KEY_PATTERN = /^hskey-api-[A-Za-z0-9_-]{12}-[A-Za-z0-9_-]{64}$/;

const EMAIL = /^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$/;
const PEM_PUBLIC = /^-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+-----END PUBLIC KEY-----\n?$/;

function validate(p: BootstrapScriptInput): void {
  const problems: string[] = [];
  if (!PEM_PUBLIC.test(p.sealingPublicKeyPem)) problems.push("sealingPublicKeyPem is not a PEM public key");
  if (p.admins.length === 0) problems.push("admins is empty");
  // Emails go into the script: only plain addresses (no quotes, spaces or shell characters).
  for (const a of p.admins) if (!EMAIL.test(a)) problems.push(`admin "${a}" is not a plain email address`);
  if (!/^\d+[smhdwy]$/.test(p.apiKeyExpiry)) problems.push(`apiKeyExpiry "${p.apiKeyExpiry}" is not a duration like 90d`);
  if (!Number.isInteger(p.windowSeconds) || p.windowSeconds < 60 || p.windowSeconds > 86400) problems.push(`windowSeconds ${p.windowSeconds} is outside 60-86400`);
  if (!/^(\d{1,3}\.){3}\d{1,3}$/.test(p.bindAddress)) problems.push(`bindAddress "${p.bindAddress}" is not an IPv4 address`);
  if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535) problems.push(`port ${p.port} is not a port number`);
  if (!/^\/[A-Za-z0-9._/-]+$/.test(p.stateDir)) problems.push(`stateDir "${p.stateDir}" is not a plain absolute path`);
  if (problems.length > 0) throw new Error(`invalid Headscale bootstrap input:\n  - ${problems.join("\n  - ")}`);
}

/** The Headscale user an admin email maps to: its local part, lower-cased, safe characters only. */
export function adminUserName(email: string): string {
  return email.split("@")[0]!.toLowerCase().replace(/[^a-z0-9.-]/g, "-");
}

/**
 * A POSIX sh script run once at first boot (after the Headscale container starts). `$HEADSCALE`
 * is the CLI (default: inside the container); tests set it to a stand-in.
 */
export function renderBootstrapScript(p: BootstrapScriptInput): string {
  validate(p);
  const users = p.admins.map((email) => `ensure_user '${adminUserName(email)}' '${email}'`).join("\n");
  return `#!/bin/sh
# hardened-matrix: Headscale bootstrap (components/render/headscaleBootstrap.ts). Runs once.
set -eu
umask 077
HEADSCALE="\${HEADSCALE:-docker exec headscale headscale}"
STATE='${p.stateDir}'
PUBLIC="$STATE/public"
if [ -e "$STATE/done" ]; then exit 0; fi
mkdir -p "$PUBLIC"
cat > "$STATE/sealing.pub.pem" <<'PEM'
${p.sealingPublicKeyPem.trimEnd()}
PEM

# Headscale answers on its unix socket once its database and noise key exist.
tries=0
until $HEADSCALE users list >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 120 ]; then echo "headscale-bootstrap: Headscale did not answer within 10 minutes" >&2; exit 1; fi
  sleep 5
done

ensure_user() {
  if ! $HEADSCALE users list 2>/dev/null | grep -qF -- "$2"; then
    $HEADSCALE users create "$1" --email "$2" >/dev/null
  fi
}
${users}

key="$($HEADSCALE apikeys create --expiration '${p.apiKeyExpiry}')"
case "$key" in
  hskey-api-*) ;;
  *) echo "headscale-bootstrap: unexpected output from apikeys create" >&2; exit 1 ;;
esac
# RSA-OAEP with SHA-256 (and MGF1-SHA-256): the API key (87 bytes) fits one 4096-bit block.
printf '%s' "$key" | openssl pkeyutl -encrypt -pubin -inkey "$STATE/sealing.pub.pem" \\
  -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 \\
  -out "$PUBLIC/${BLOB_NAME}"
key=''
chmod 0755 "$PUBLIC"
chmod 0644 "$PUBLIC/${BLOB_NAME}"
touch "$STATE/done"

# Serve only the sealed blob, for a bounded time; then nothing listens on this port.
status=0
timeout ${p.windowSeconds} python3 -m http.server --bind '${p.bindAddress}' --directory "$PUBLIC" ${p.port} >/dev/null 2>&1 || status=$?
rm -f "$PUBLIC/${BLOB_NAME}"
# timeout(1) exits 124 when the window ends: the expected way out.
if [ "$status" -ne 124 ] && [ "$status" -ne 0 ]; then echo "headscale-bootstrap: blob server failed ($status)" >&2; exit "$status"; fi
`;
}

/** An RSA-4096 key pair for sealing (Pulumi keeps `privateKeyPem` as a secret in state). */
export function generateSealingKeyPair(): { publicKeyPem: string; privateKeyPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync("rsa", {
    modulusLength: 4096,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  });
  return { publicKeyPem: publicKey, privateKeyPem: privateKey };
}

/** Opens a blob sealed by the bootstrap script; throws if it was not sealed to this key or is no API key. */
export function openSealedApiKey(blob: Buffer, privateKeyPem: string): string {
  let plain: Buffer;
  try {
    plain = privateDecrypt({ key: privateKeyPem, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, blob);
  } catch {
    throw new Error("the Headscale bootstrap blob does not open with this stack's sealing key (sealed to another key, or corrupted)");
  }
  const key = plain.toString("utf8");
  if (!API_KEY_PATTERN.test(key)) throw new Error("the Headscale bootstrap blob opened but holds no Headscale API key");
  return key;
}
