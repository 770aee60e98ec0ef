import { createPrivateKey, generateKeyPairSync, sign, type KeyObject } from "node:crypto";

/**
 * A server-server request signed as the Matrix spec says ("Request Authentication", server-server API):
 * the canonical JSON of {method, uri, origin, destination[, content]} signed with ed25519, sent as
 * `Authorization: X-Matrix origin=...,destination=...,key="ed25519:ID",sig="..."` (unpadded base64).
 * A test signs with a key of its own choosing: a forged origin is a request that names a server whose
 * published keys did not make the signature.
 */

/** Canonical JSON (appendix "Canonical JSON"): keys sorted by code point, no insignificant whitespace. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

export interface SigningKey {
  keyId: string;
  privateKey: KeyObject;
}

/** A fresh ed25519 key that no server published. */
export function strayKey(keyId = "ed25519:forged"): SigningKey {
  return { keyId, privateKey: generateKeyPairSync("ed25519").privateKey };
}

export function xMatrixAuthorization(key: SigningKey, r: { method: string; uri: string; origin: string; destination: string; content?: unknown }): string {
  const signed = canonicalJson({ method: r.method, uri: r.uri, origin: r.origin, destination: r.destination, ...(r.content !== undefined ? { content: r.content } : {}) });
  const sig = sign(null, Buffer.from(signed, "utf8"), key.privateKey).toString("base64").replace(/=+$/, "");
  return `X-Matrix origin="${r.origin}",destination="${r.destination}",key="${key.keyId}",sig="${sig}"`;
}

// PKCS#8 PrivateKeyInfo for Ed25519 (RFC 8410) up to the 32-byte seed.
const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

/** A server's own key from the file Dendrite reads (components/render/signingKey.ts writes it: Key-ID header, base64 seed). */
export function signingKeyFromPem(pem: string): SigningKey {
  const keyId = /^Key-ID: (ed25519:[A-Za-z0-9_]+)$/m.exec(pem)?.[1];
  const seed = Buffer.from(/\n\n([A-Za-z0-9+/=]+)\n-----END/.exec(pem)?.[1] ?? "", "base64");
  if (!keyId || seed.length !== 32) throw new Error("not a Matrix signing key file");
  return { keyId, privateKey: createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: "der", type: "pkcs8" }) };
}
