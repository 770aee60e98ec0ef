import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey, randomBytes, sign, verify } from "node:crypto";
import { test } from "node:test";
import { ed25519PublicKey, matrixSigningKey, parseMatrixSigningKeyPem } from "../components/render/signingKey";

// RFC 8032 section 7.1, TEST 1.
const RFC_SEED = Buffer.from("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", "hex");
const RFC_PUBLIC = Buffer.from("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "hex");
const RFC_SIG_EMPTY =
  "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

/** A node key from the PEM's seed, through JWK (a different path than the renderer's PKCS#8 wrapper). */
function keyFromSeed(seed: Buffer, publicKey: Buffer) {
  return createPrivateKey({ key: { kty: "OKP", crv: "Ed25519", d: seed.toString("base64url"), x: publicKey.toString("base64url") }, format: "jwk" });
}

test("RFC 8032 test 1: seed -> public key, and the signature of the empty message", () => {
  const key = matrixSigningKey(RFC_SEED, "a_1");
  assert.equal(key.publicKeyBase64, RFC_PUBLIC.toString("base64").replace(/=+$/, ""));
  assert.deepEqual(ed25519PublicKey(RFC_SEED), RFC_PUBLIC);
  const { seed } = parseMatrixSigningKeyPem(key.pem);
  assert.equal(sign(null, Buffer.alloc(0), keyFromSeed(seed, RFC_PUBLIC)).toString("hex"), RFC_SIG_EMPTY);
});

test("exact file format: block type, Key-ID header, blank line, padded base64 seed, trailing newline", () => {
  const seed = Buffer.alloc(32, 0xff);
  const key = matrixSigningKey(seed, "auto_Key9");
  assert.equal(key.keyId, "ed25519:auto_Key9");
  assert.equal(
    key.pem,
    "-----BEGIN MATRIX PRIVATE KEY-----\n" +
      "Key-ID: ed25519:auto_Key9\n" +
      "\n" +
      "//////////////////////////////////////////8=\n" +
      "-----END MATRIX PRIVATE KEY-----\n",
  );
});

test("publicKeyBase64 is unpadded standard base64 of 32 bytes", () => {
  for (let i = 0; i < 20; i++) {
    const key = matrixSigningKey(randomBytes(32), "k");
    assert.match(key.publicKeyBase64, /^[A-Za-z0-9+/]{43}$/);
    assert.equal(Buffer.from(key.publicKeyBase64, "base64").length, 32);
  }
});

test("round trip: parse gives back the seed and key ID; the derived public key verifies the seed's signatures", () => {
  const seed = randomBytes(32);
  const key = matrixSigningKey(seed, "0123abcXYZ_");
  const parsed = parseMatrixSigningKeyPem(key.pem);
  assert.equal(parsed.keyId, key.keyId);
  assert.deepEqual(parsed.seed, seed);

  const publicRaw = Buffer.from(key.publicKeyBase64, "base64");
  const message = Buffer.from('{"server_name":"example.org","valid_until_ts":1}');
  const signature = sign(null, message, keyFromSeed(parsed.seed, publicRaw));
  const publicKey = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: publicRaw.toString("base64url") }, format: "jwk" });
  assert.equal(verify(null, message, publicKey, signature), true);
  assert.equal(verify(null, Buffer.concat([message, Buffer.from(" ")]), publicKey, signature), false);
  // Another seed's public key does not verify it.
  const other = Buffer.from(matrixSigningKey(randomBytes(32), "k").publicKeyBase64, "base64");
  const otherKey = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: other.toString("base64url") }, format: "jwk" });
  assert.equal(verify(null, message, otherKey, signature), false);
});

test("bad seeds and key names are refused", () => {
  assert.throws(() => matrixSigningKey(randomBytes(31), "k"), /32 bytes/);
  assert.throws(() => matrixSigningKey(randomBytes(33), "k"), /32 bytes/);
  assert.throws(() => matrixSigningKey(randomBytes(64), "k"), /32 bytes/);
  assert.throws(() => matrixSigningKey(Buffer.alloc(0), "k"), /32 bytes/);
  for (const name of ["", "a-b", "a:b", "a b", "ä", "a\nb", "ed25519:a", "a/b"]) {
    assert.throws(() => matrixSigningKey(randomBytes(32), name), /key name/, JSON.stringify(name));
  }
});

test("the parser mirrors Dendrite's checks", () => {
  const seed = randomBytes(32);
  const b64 = seed.toString("base64");
  const block = (type: string, headers: string, body = b64) => `-----BEGIN ${type}-----\n${headers}\n${body}\n-----END ${type}-----\n`;

  // Other blocks before it are skipped; headers without the blank line and CRLF are read as Go does.
  const mixed = block("CERTIFICATE", "", "AAAA") + block("MATRIX PRIVATE KEY", "Key-ID: ed25519:x1\n");
  assert.deepEqual(parseMatrixSigningKeyPem(mixed), { keyId: "ed25519:x1", seed });
  assert.deepEqual(parseMatrixSigningKeyPem(block("MATRIX PRIVATE KEY", "Key-ID: ed25519:x1").replace(/\n/g, "\r\n")).seed, seed);

  assert.throws(() => parseMatrixSigningKeyPem(block("PRIVATE KEY", "Key-ID: ed25519:x1\n")), /no MATRIX PRIVATE KEY/);
  assert.throws(() => parseMatrixSigningKeyPem(""), /no MATRIX PRIVATE KEY/);
  assert.throws(() => parseMatrixSigningKeyPem(block("MATRIX PRIVATE KEY", "")), /missing Key-ID/);
  assert.throws(() => parseMatrixSigningKeyPem(block("MATRIX PRIVATE KEY", "Key-Id: ed25519:x1\n")), /missing Key-ID/);
  assert.throws(() => parseMatrixSigningKeyPem(block("MATRIX PRIVATE KEY", "Key-ID: curve25519:x1\n")), /does not start with "ed25519:"/);
  assert.throws(() => parseMatrixSigningKeyPem(block("MATRIX PRIVATE KEY", "Key-ID: ed25519:a-b\n")), /characters other than/);
  assert.throws(() => parseMatrixSigningKeyPem(block("MATRIX PRIVATE KEY", "Key-ID: ed25519:\n")), /characters other than/);
  assert.throws(() => parseMatrixSigningKeyPem(block("MATRIX PRIVATE KEY", "Key-ID: ed25519:x1\n", randomBytes(31).toString("base64"))), /32 bytes, got 31/);
  assert.throws(() => parseMatrixSigningKeyPem(block("MATRIX PRIVATE KEY", "Key-ID: ed25519:x1\n", randomBytes(64).toString("base64"))), /32 bytes, got 64/);
  assert.throws(() => parseMatrixSigningKeyPem(block("MATRIX PRIVATE KEY", "Key-ID: ed25519:x1\n", b64.replace(/=$/, ""))), /padded base64/);
  assert.throws(() => parseMatrixSigningKeyPem(block("MATRIX PRIVATE KEY", "Key-ID: ed25519:x1\n", `${b64.slice(0, 10)}!${b64.slice(11)}`)), /padded base64/);
});
