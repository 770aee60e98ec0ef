import { isDeepStrictEqual } from "node:util";

/** How the engine marks a value unknown in a preview (pulumi/pulumi sdk/nodejs/runtime/rpc.ts unknownValue). */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
/** The key and value of the SDK's secret wrapper (sdk/nodejs/runtime/rpc.ts specialSigKey, specialSecretSig). */
const SIG_KEY = "4dabf18193072939515e22adb298388d";
const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";

export type Props = Record<string, unknown>;

export function isSecret(v: unknown): v is { value: unknown } {
  return typeof v === "object" && v !== null && (v as Props)[SIG_KEY] === SECRET_SIG;
}

export function secret(value: unknown): Props {
  return { [SIG_KEY]: SECRET_SIG, value };
}

/** The plain value: secret wrappers removed, recursively. */
export function plain(v: unknown): unknown {
  if (isSecret(v)) return plain(v.value);
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

export function containsUnknown(v: unknown): boolean {
  if (v === UNKNOWN) return true;
  if (isSecret(v)) return containsUnknown(v.value);
  if (Array.isArray(v)) return v.some(containsUnknown);
  if (v !== null && typeof v === "object") return Object.values(v).some(containsUnknown);
  return false;
}

/** An empty value the way Terraform sees it: null, "", [], {} (an unset optional). */
function isEmpty(v: unknown): boolean {
  return v === undefined || v === null || v === "" || (Array.isArray(v) && v.length === 0) || (typeof v === "object" && v !== null && !Array.isArray(v) && Object.keys(v).length === 0);
}

/** Whether an input changed: unknown counts as a change (the bridge plans it as one). */
export function changed(oldValue: unknown, newValue: unknown): boolean {
  if (containsUnknown(newValue)) return true;
  const a = plain(oldValue);
  const b = plain(newValue);
  if (isEmpty(a) && isEmpty(b)) return false;
  return !isDeepStrictEqual(normalize(a), normalize(b));
}

/** Numbers arrive as floats and sets in any order; compare them as the provider would. */
function normalize(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(normalize);
  if (v !== null && typeof v === "object") {
    return Object.fromEntries(Object.keys(v).filter((k) => !isEmpty((v as Props)[k])).sort().map((k) => [k, normalize((v as Props)[k])]));
  }
  return v;
}
