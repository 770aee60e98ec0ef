import { createPrivateKey, createPublicKey } from "node:crypto";

/**
 * The Matrix server signing key in Dendrite's file format (setup/config/config.go readKeyPEM,
 * written by Go's pem.Encode in cmd/generate-keys): a PEM block of type MATRIX PRIVATE KEY, one
 * header `Key-ID: ed25519:<name>`, a blank line, the padded base64 of the 32-byte ed25519 seed,
 * and a trailing newline.
 */
export interface MatrixSigningKey {
  pem: string;
  /** "ed25519:<name>" */
  keyId: string;
  /** Unpadded standard base64, as Matrix publishes it in /_matrix/key/v2/server. */
  publicKeyBase64: string;
}

const BLOCK_TYPE = "MATRIX PRIVATE KEY";
const KEY_NAME = /^[a-zA-Z0-9_]+$/;
const KEY_ID = /^ed25519:[a-zA-Z0-9_]+$/;
const SEED_BYTES = 32;
// PKCS#8 PrivateKeyInfo for Ed25519 (RFC 8410) up to the 32-byte seed.
const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

/** The raw 32-byte public key of an ed25519 seed. */
export function ed25519PublicKey(seed: Buffer): Buffer {
  if (seed.length !== SEED_BYTES) throw new Error(`ed25519 seed must be ${SEED_BYTES} bytes, got ${seed.length}`);
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: "der", type: "pkcs8" });
  // The SPKI DER of an Ed25519 key ends with the 32 raw public key bytes.
  const spki = createPublicKey(privateKey).export({ type: "spki", format: "der" });
  return spki.subarray(spki.length - SEED_BYTES);
}

export function matrixSigningKey(seed: Buffer, keyName: string): MatrixSigningKey {
  if (!Buffer.isBuffer(seed) || seed.length !== SEED_BYTES) {
    throw new Error(`matrixSigningKey: the seed must be ${SEED_BYTES} bytes, got ${Buffer.isBuffer(seed) ? seed.length : typeof seed}`);
  }
  if (!KEY_NAME.test(keyName)) {
    throw new Error(`matrixSigningKey: key name ${JSON.stringify(keyName)} must match ${KEY_NAME} (Dendrite refuses other key IDs)`);
  }
  const keyId = `ed25519:${keyName}`;
  // 32 bytes are 44 base64 characters: one line, under pem.Encode's 64-column wrap.
  const pem = `-----BEGIN ${BLOCK_TYPE}-----\nKey-ID: ${keyId}\n\n${seed.toString("base64")}\n-----END ${BLOCK_TYPE}-----\n`;
  return { pem, keyId, publicKeyBase64: ed25519PublicKey(seed).toString("base64").replace(/=+$/, "") };
}

const PEM_BLOCK = /-----BEGIN ([^-\n]*)-----\r?\n([\s\S]*?)-----END ([^-\n]*)-----/g;
const BASE64_LINES = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Reads a key file the way Dendrite does: the first MATRIX PRIVATE KEY block (other blocks are
 * skipped), a Key-ID header that starts with "ed25519:" and uses only [a-zA-Z0-9_] after it.
 * Stricter than Dendrite in one point: the body must be exactly 32 bytes (Dendrite silently uses
 * the first 32 of a longer body).
 */
export function parseMatrixSigningKeyPem(pem: string): { keyId: string; seed: Buffer } {
  for (const match of pem.matchAll(PEM_BLOCK)) {
    const [, type, inner, endType] = match;
    if (type !== endType) continue; // Go's pem.Decode does not accept a mismatched END line either
    if (type !== BLOCK_TYPE) continue;
    const lines = inner.split(/\r?\n/);
    const headers = new Map<string, string>();
    let i = 0;
    for (; i < lines.length; i++) {
      const colon = lines[i].indexOf(":");
      if (colon < 0) break;
      headers.set(lines[i].slice(0, colon).trim(), lines[i].slice(colon + 1).trim());
    }
    const keyId = headers.get("Key-ID") ?? "";
    if (keyId === "") throw new Error("parseMatrixSigningKeyPem: missing Key-ID header");
    if (!keyId.startsWith("ed25519:")) throw new Error(`parseMatrixSigningKeyPem: key ID ${JSON.stringify(keyId)} does not start with "ed25519:"`);
    if (!KEY_ID.test(keyId)) throw new Error(`parseMatrixSigningKeyPem: key ID ${JSON.stringify(keyId)} has characters other than a-z, A-Z, 0-9 and _`);
    const body = lines.slice(i).join("").replace(/[ \t\r]/g, "");
    if (!BASE64_LINES.test(body) || body.length % 4 !== 0) throw new Error("parseMatrixSigningKeyPem: the key body is not padded base64");
    const seed = Buffer.from(body, "base64");
    if (seed.length !== SEED_BYTES) throw new Error(`parseMatrixSigningKeyPem: the key body must be ${SEED_BYTES} bytes, got ${seed.length}`);
    return { keyId, seed };
  }
  throw new Error(`parseMatrixSigningKeyPem: no ${BLOCK_TYPE} PEM block`);
}
