import { readFileSync } from "node:fs";
import * as path from "node:path";
import { parse } from "yaml";
import { PROJECT, settingsFromConfig, type Settings } from "../components/settings";
import { PROJECT_DIR, readStackConfig } from "./stackConfig";

/**
 * What `pulumi up` needs that the offline plan does not: the providers' credentials (stack config
 * or the environment variables each provider reads) and secrets the CLI can decrypt. Checked by
 * `npm run plan:check`, named in the plan's summary.
 */

/** One way to give a credential: config keys that must all be set, or environment variables that must all be. */
interface Way {
  keys: string[];
  env: string[];
}

interface Credential {
  /** The key an operator is told to set. */
  key: string;
  why: string;
  ways: Way[];
}

// Evidence for the environment variables:
// digitalocean/terraform-provider-digitalocean digitalocean/provider.go (token: DIGITALOCEAN_TOKEN,
// DIGITALOCEAN_ACCESS_TOKEN; spaces_access_id/spaces_secret_key: SPACES_ACCESS_KEY_ID,
// SPACES_SECRET_ACCESS_KEY); @pulumi/cloudflare provider.d.ts (apiToken: CLOUDFLARE_API_TOKEN;
// apiKey with email: CLOUDFLARE_API_KEY, CLOUDFLARE_EMAIL; apiUserServiceKey:
// CLOUDFLARE_API_USER_SERVICE_KEY); @pulumi/tailscale provider.d.ts (apiKey: TAILSCALE_API_KEY;
// oauthClientId with oauthClientSecret: TAILSCALE_OAUTH_CLIENT_ID, TAILSCALE_OAUTH_CLIENT_SECRET).
const DIGITALOCEAN: Credential = {
  key: "digitalocean:token",
  why: "droplets, volumes, firewalls (a read/write API token)",
  ways: [
    { keys: ["digitalocean:token"], env: [] },
    { keys: [], env: ["DIGITALOCEAN_TOKEN"] },
    { keys: [], env: ["DIGITALOCEAN_ACCESS_TOKEN"] },
  ],
};
const SPACES: Credential[] = [
  { key: "digitalocean:spacesAccessId", why: "the backup bucket (Spaces keys, not the API token)", ways: [{ keys: ["digitalocean:spacesAccessId"], env: [] }, { keys: [], env: ["SPACES_ACCESS_KEY_ID"] }] },
  { key: "digitalocean:spacesSecretKey", why: "the backup bucket (Spaces keys, not the API token)", ways: [{ keys: ["digitalocean:spacesSecretKey"], env: [] }, { keys: [], env: ["SPACES_SECRET_ACCESS_KEY"] }] },
];
const CLOUDFLARE: Credential = {
  key: "cloudflare:apiToken",
  why: "DNS records (a token with Zone.DNS edit on the zone)",
  ways: [
    { keys: ["cloudflare:apiToken"], env: [] },
    { keys: [], env: ["CLOUDFLARE_API_TOKEN"] },
    { keys: ["cloudflare:apiKey", "cloudflare:email"], env: [] },
    { keys: [], env: ["CLOUDFLARE_API_KEY", "CLOUDFLARE_EMAIL"] },
    { keys: ["cloudflare:apiUserServiceKey"], env: [] },
    { keys: [], env: ["CLOUDFLARE_API_USER_SERVICE_KEY"] },
  ],
};
const TAILSCALE: Credential = {
  key: "tailscale:apiKey",
  why: "the tailnet policy and the nodes' join keys (an admin's API key)",
  ways: [
    { keys: ["tailscale:apiKey"], env: [] },
    { keys: [], env: ["TAILSCALE_API_KEY"] },
    { keys: ["tailscale:oauthClientId", "tailscale:oauthClientSecret"], env: [] },
    { keys: [], env: ["TAILSCALE_OAUTH_CLIENT_ID", "TAILSCALE_OAUTH_CLIENT_SECRET"] },
  ],
};

/** The provider credentials a stack's `pulumi up` needs. */
export function neededCredentials(settings: Pick<Settings, "target" | "vpn" | "backupPlan">): Credential[] {
  if (settings.target !== "digitalocean") return [];
  return [DIGITALOCEAN, ...(settings.backupPlan?.repository.kind === "spaces" ? SPACES : []), CLOUDFLARE, ...(settings.vpn === "tailscale" ? [TAILSCALE] : [])];
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Whether a `secure:` value has a shape some Pulumi secrets provider writes: the passphrase
 * provider's `v1:<base64 nonce>:<base64 AES-256-GCM ciphertext>` (pulumi/pulumi
 * sdk/go/common/resource/config/crypt.go symmetricCrypter.EncryptValue; the nonce is 12 bytes), or
 * the base64 ciphertext of the service and cloud KMS providers. The plan never decrypts it.
 */
export function isWellFormedCiphertext(value: string): boolean {
  const parts = value.split(":");
  if (parts.length === 3 && parts[0] === "v1") {
    return BASE64.test(parts[1]!) && Buffer.from(parts[1]!, "base64").length === 12 && parts[2]!.length > 0 && BASE64.test(parts[2]!);
  }
  return value.length > 0 && BASE64.test(value);
}

type StackFile = Record<string, unknown>;

function readStackFile(stack: string, projectDir: string): StackFile {
  const doc = (parse(readFileSync(path.join(projectDir, `Pulumi.${stack}.yaml`), "utf8")) ?? {}) as { config?: StackFile };
  return doc.config ?? {};
}

function secureText(value: unknown): string | undefined {
  return typeof value === "object" && value !== null && "secure" in value && typeof (value as { secure: unknown }).secure === "string" ? (value as { secure: string }).secure : undefined;
}

/** A full key as written in a stack file, whether or not the project's namespace is spelled out. */
function lookup(file: StackFile, key: string): unknown {
  return file[key] ?? (key.startsWith(`${PROJECT}:`) ? file[key.slice(PROJECT.length + 1)] : undefined);
}

/**
 * Every credential and secret problem of a stack, each naming its key: a needed credential set
 * nowhere (neither config nor environment), a credential in plain text, a `secure:` value no
 * secrets provider could have written (such as the placeholders in the example stack files).
 */
export function credentialProblems(
  stack: string,
  settings: Pick<Settings, "target" | "vpn" | "backupPlan">,
  env: NodeJS.ProcessEnv = process.env,
  projectDir = PROJECT_DIR,
): string[] {
  const file = readStackFile(stack, projectDir);
  const problems: string[] = [];
  const malformed = new Set<string>();
  for (const [key, value] of Object.entries(file)) {
    const text = secureText(value);
    if (text !== undefined && !isWellFormedCiphertext(text)) {
      const full = key.includes(":") ? key : `${PROJECT}:${key}`;
      malformed.add(full);
      problems.push(`${full}: its secure value is not a ciphertext the Pulumi CLI can decrypt (a placeholder?); set it with \`pulumi config set --stack ${stack} --secret ${full} ...\``);
    }
  }
  const isSet = (key: string) => lookup(file, key) !== undefined && !malformed.has(key);
  const envSet = (name: string) => (env[name] ?? "") !== "";
  for (const need of neededCredentials(settings)) {
    const given = need.ways.some((w) => w.keys.every(isSet) && w.env.every(envSet) && w.keys.length + w.env.length > 0);
    if (!given && !malformed.has(need.key)) {
      const envs = need.ways.filter((w) => w.keys.length === 0).map((w) => w.env.join(" with "));
      problems.push(`${need.key}: is not set, and ${need.why} needs it; \`pulumi config set --stack ${stack} --secret ${need.key} ...\`, or the environment variable ${envs.join(" or ")}`);
    }
    for (const w of need.ways) {
      for (const key of w.keys) {
        const value = lookup(file, key);
        if (value !== undefined && secureText(value) === undefined) {
          problems.push(`${key}: is in plain text in Pulumi.${stack}.yaml; a credential is a secret: \`pulumi config set --stack ${stack} --secret ${key} ...\``);
        }
      }
    }
  }
  return problems;
}

/** The settings a stack file gives (as the program reads them), for what depends on them here. */
export function stackSettings(stack: string, projectDir = PROJECT_DIR): Settings {
  const { values, secretKeys } = readStackConfig(stack, projectDir);
  return settingsFromConfig(stack, values, (k) => secretKeys.includes(k), { spacesKeysInEnv: true });
}
