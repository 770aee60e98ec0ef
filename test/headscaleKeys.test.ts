import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { HeadscaleApi, HeadscaleApiError } from "../components/platform/headscaleApi";
import { preAuthKeyProvider } from "../components/platform/headscaleKeys";
import { FakeHeadscaleApi } from "./support/fakeHeadscaleApi";

// The dynamic provider's methods against a fake of Headscale's REST API on 127.0.0.1.
const API_KEY = `hskey-api-ABCDEFGHIJKL-${"b2".repeat(32)}`;
const fake = new FakeHeadscaleApi(API_KEY);
before(() => fake.start());
after(() => fake.stop());

const p = preAuthKeyProvider as Required<typeof preAuthKeyProvider>;
const inputs = () => ({ apiUrl: fake.url, apiKey: API_KEY, tags: ["tag:hm-node"], ttlSeconds: 3600 });

describe("Headscale pre-auth keys (dynamic provider)", () => {
  test("create: one tagged, single-use, non-ephemeral key that expires within the TTL", async () => {
    const before = Date.now();
    const { id, outs } = await p.create(inputs());
    assert.match(outs.key, /^hskey-auth-[0-9a-f]{12}-[0-9a-f]{64}$/);
    const sent = fake.requests.at(-1)!;
    assert.equal(sent.method, "POST");
    assert.equal(sent.url, "/api/v1/preauthkey");
    const body = sent.body as Record<string, unknown>;
    assert.deepEqual(body.aclTags, ["tag:hm-node"]);
    assert.equal(body.reusable, false);
    assert.equal(body.ephemeral, false);
    assert.equal(body.user, undefined, "tag-only key: no user");
    const expires = Date.parse(outs.expiration);
    assert.ok(expires >= before + 3600_000 - 1000 && expires <= Date.now() + 3600_000 + 1000, outs.expiration);
    assert.ok(fake.keys.has(id));
  });

  test("read: finds the key, sees expiry, and reports a vanished key as gone", async () => {
    const { id, outs } = await p.create(inputs());
    const fresh = await p.read(id, outs);
    assert.equal(fresh.id, id);
    assert.equal(fresh.props.expired, false);
    assert.equal(fresh.props.key, outs.key, "the list shows only a masked key: state keeps the real one");
    fake.keys.get(id)!.expiration = new Date(Date.now() - 1000).toISOString();
    assert.equal((await p.read(id, outs)).props.expired, true);
    fake.keys.delete(id);
    assert.equal((await p.read(id, outs)).id, "");
  });

  test("delete: expires then deletes; a key already gone is fine", async () => {
    const { id, outs } = await p.create(inputs());
    const from = fake.requests.length;
    await p.delete(id, outs);
    assert.equal(fake.keys.has(id), false);
    assert.deepEqual(fake.requests.slice(from).map((r) => `${r.method} ${r.url}`), ["GET /api/v1/preauthkey", "POST /api/v1/preauthkey/expire", `DELETE /api/v1/preauthkey?id=${id}`]);
    await p.delete(id, outs);
  });

  test("diff: new tags or TTL replace the key; a new API key updates in place", async () => {
    const { id, outs } = await p.create(inputs());
    assert.deepEqual((await p.diff(id, outs, inputs())).changes, false);
    assert.deepEqual((await p.diff(id, outs, { ...inputs(), tags: ["tag:other"] })).replaces, ["tags"]);
    assert.deepEqual((await p.diff(id, outs, { ...inputs(), ttlSeconds: 600 })).replaces, ["ttlSeconds"]);
    const rotated = await p.diff(id, outs, { ...inputs(), apiKey: "hskey-api-other" });
    assert.equal(rotated.changes, true);
    assert.deepEqual(rotated.replaces, []);
  });

  test("check refuses an untagged key and an unbounded TTL", async () => {
    assert.equal((await p.check({}, { ...inputs(), tags: [] })).failures?.[0]?.property, "tags");
    assert.equal((await p.check({}, { ...inputs(), ttlSeconds: 30 * 86400 })).failures?.[0]?.property, "ttlSeconds");
  });

  test("a refusing API gives a clear error: wrong API key, invalid tag, server error", async () => {
    await assert.rejects(p.create({ ...inputs(), apiKey: "hskey-api-wrong" }), (e: Error) => {
      assert.ok(e instanceof HeadscaleApiError);
      assert.equal(e.message, "Headscale API refused POST /api/v1/preauthkey: HTTP 401 (Unauthorized); the API key is wrong, expired or revoked");
      return true;
    });
    const api = new HeadscaleApi(fake.url, API_KEY);
    await assert.rejects(api.createPreAuthKey({ aclTags: ["hm-node"], expiration: new Date().toISOString(), reusable: false, ephemeral: false }), /must be tag:name/);
    fake.failWith = { status: 400, code: 3, message: "tag must start with the string 'tag:', got: x" };
    try {
      await assert.rejects(p.create(inputs()), /Headscale API refused POST \/api\/v1\/preauthkey: HTTP 400 \(tag must start with the string 'tag:', got: x\)/);
    } finally {
      fake.failWith = undefined;
    }
  });

  test("an admin's key: owned by the user with that email, untagged", async () => {
    fake.users.push({ id: "7", name: "alice", email: "alice@example.com" });
    const { outs } = await p.create({ ...inputs(), tags: [], userEmail: "alice@example.com" });
    assert.match(outs.key, /^hskey-auth-/);
    const body = fake.requests.at(-1)!.body as Record<string, unknown>;
    assert.equal(body.user, "7");
    assert.deepEqual(body.aclTags, []);
    await assert.rejects(p.create({ ...inputs(), tags: [], userEmail: "nobody@example.com" }), /0 users with email nobody@example.com/);
    assert.equal((await p.check({}, { ...inputs(), userEmail: "alice@example.com" })).failures?.[0]?.property, "tags", "tags and a user: refused");
  });

  test("an unreachable API is retried a bounded number of times, then named", async () => {
    const api = new HeadscaleApi("http://127.0.0.1:1", API_KEY, 1000, 3, 10);
    await assert.rejects(api.listPreAuthKeys(), /Headscale API GET \/api\/v1\/preauthkey at http:\/\/127\.0\.0\.1:1 failed after 3 attempts/);
  });

  test("the API key never goes to a non-loopback plain-http URL", () => {
    assert.throws(() => new HeadscaleApi("http://hs.example.org", API_KEY), /must be https/);
    assert.doesNotThrow(() => new HeadscaleApi("https://hs.example.org", API_KEY));
  });
});
