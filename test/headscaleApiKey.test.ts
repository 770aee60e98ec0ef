import assert from "node:assert/strict";
import { after, afterEach, before, describe, mock, test } from "node:test";
import { API_KEY_LIFETIME_DAYS, apiKeyRenewalDue, BOOTSTRAP_WINDOW_SECONDS, handoverProvider, renewApiKey } from "../components/platform/headscale";
import { preAuthKeyProvider } from "../components/platform/headscaleKeys";
import { FakeHeadscaleApi } from "./support/fakeHeadscaleApi";

// The Headscale API key over months, on a simulated clock shared by the program (Date) and a fake
// of Headscale's REST API that refuses expired keys as hscontrol/db/api_key.go ValidateAPIKey does.
const DAY = 86_400_000;
const T0 = Date.parse("2026-01-01T00:00:00Z");
const day = (n: number) => T0 + n * DAY;
const HANDED_OVER = `hskey-api-Ab_dEfGh-JkL-${"g7".repeat(32)}`;

let fake: FakeHeadscaleApi;
let clock = T0;
before(async () => {
  // The bootstrap made the key at T0 with `--expiration 90d`.
  fake = new FakeHeadscaleApi(HANDED_OVER, new Date(day(API_KEY_LIFETIME_DAYS)).toISOString());
  fake.now = () => new Date(clock);
  await fake.start();
});
after(() => fake.stop());
afterEach(() => mock.timers.reset());

/** Moves the program's clock and the server's to `at`. */
function at(t: number): void {
  clock = t;
  mock.timers.reset();
  mock.timers.enable({ apis: ["Date"], now: t });
}

const p = handoverProvider as Required<typeof handoverProvider>;
const keys = preAuthKeyProvider as Required<typeof preAuthKeyProvider>;
const BLOB = "http://192.0.2.10/sealed-api-key.bin";

/** One `pulumi up` as the engine runs it for the handover: diff, then update if it said so. */
async function up(olds: Record<string, unknown>, apiUrl: string): Promise<{ step: string; outs: Record<string, unknown> }> {
  const news = { blobUrl: BLOB, privateKeyPem: "pem", timeoutMs: 1000, apiUrl };
  const d = await p.diff("id", olds, news);
  if (d.replaces?.length) return { step: "replace", outs: olds };
  if (!d.changes) return { step: "same", outs: olds };
  return { step: "update", outs: (await p.update("id", olds, news)).outs as Record<string, unknown> };
}

describe("Headscale API key renewal", () => {
  test("renewal is due in the last 30 days, or when the expiration is not known yet", () => {
    assert.equal(apiKeyRenewalDue(new Date(day(90)).toISOString(), day(59)), false);
    assert.equal(apiKeyRenewalDue(new Date(day(90)).toISOString(), day(60)), true);
    assert.equal(apiKeyRenewalDue(undefined, day(0)), true);
  });

  test("a pulumi up every 45 days keeps the tailnet manageable for two years; each old key stops working", async () => {
    // The state right after the first up (create's lower bound of the bootstrap key's expiry).
    let state: Record<string, unknown> = { blobUrl: BLOB, apiUrl: fake.url, apiKey: HANDED_OVER, expiration: new Date(day(90) - BOOTSTRAP_WINDOW_SECONDS * 1000).toISOString() };
    const seen = [HANDED_OVER];
    const steps: string[] = [];
    for (let d = 45; d <= 730; d += 45) {
      at(day(d));
      const r = await up(state, fake.url);
      steps.push(`${d}:${r.step}`);
      state = r.outs;
      // A minute later (expiring a key sets its expiration to the server's now: ExpireAPIKey).
      at(day(d) + 60_000);
      const key = state.apiKey as string;
      if (key !== seen.at(-1)) seen.push(key);
      assert.ok(fake.validApiKey(key), `day ${d}: the key in state works`);
      for (const old of seen.slice(0, -1)) assert.equal(fake.validApiKey(old), false, `day ${d}: a replaced key no longer works`);
      // What the key is for: a node's pre-auth key, created with the key in state.
      const { outs } = await keys.create({ apiUrl: fake.url, apiKey: key, tags: ["tag:hm-node"], ttlSeconds: 3600 });
      assert.match(outs.key, /^hskey-auth-/);
    }
    assert.ok(seen.length >= 8, `renewed ${seen.length - 1} times`);
    assert.equal(steps[0], "45:same", "no change while more than 30 days are left");
    assert.equal(steps[1], "90:update");
    const expiration = Date.parse(state.expiration as string);
    assert.ok(expiration > day(730) + 30 * DAY, "the key in state has more than 30 days left");
  });

  test("a state from before renewal (no expiration) learns it from the API without a new key", async () => {
    const f = new FakeHeadscaleApi(`hskey-api-Zz_yYxXwWvVu-${"h8".repeat(32)}`, new Date(day(90)).toISOString());
    f.now = () => new Date(day(10));
    await f.start();
    try {
      at(day(10));
      const r = await up({ blobUrl: BLOB, apiKey: f.apiKey }, f.url);
      assert.equal(r.step, "update");
      assert.equal(r.outs.apiKey, f.apiKey);
      assert.equal(r.outs.expiration, new Date(day(90)).toISOString());
      assert.equal(f.apiKeys.size, 1, "no key created");
      assert.equal((await up(r.outs, f.url)).step, "same");
    } finally {
      await f.stop();
    }
  });

  test("a key that expired before any renewal: a clear error naming the README's recovery", async () => {
    const f = new FakeHeadscaleApi(`hskey-api-Qq_wWeErRtTy-${"i9".repeat(32)}`, new Date(day(90)).toISOString());
    f.now = () => new Date(day(120));
    await f.start();
    try {
      at(day(120));
      await assert.rejects(up({ blobUrl: BLOB, apiUrl: f.url, apiKey: f.apiKey, expiration: new Date(day(90)).toISOString() }, f.url), /has expired or was revoked.*README "Headscale mode"/);
    } finally {
      await f.stop();
    }
  });

  test("if the old key cannot be expired, the new one is expired too, the old one stays, and the run fails", async () => {
    const f = new FakeHeadscaleApi(`hskey-api-Mm_nNbBvVcCx-${"j0".repeat(32)}`, new Date(day(90)).toISOString());
    let serverNow = day(70);
    f.now = () => new Date(serverNow);
    await f.start();
    try {
      // A flaky server: the expiry of the old key fails once.
      f.failNext = { path: "/api/v1/apikey/expire", status: 503, code: 14, message: "unavailable" };
      await assert.rejects(renewApiKey(f.url, f.apiKey, day(70)), /HTTP 503/);
      serverNow += 60_000;
      assert.ok(f.validApiKey(f.apiKey), "the old key still works");
      assert.equal([...f.apiKeys.values()].filter((k) => f.validApiKey(`hskey-api-${k.prefix}-${k.secret}`)).length, 1, "the new key was expired");
    } finally {
      await f.stop();
    }
  });

  test("in the run that renews the API key, node keys deleted at its end (with the old key) do not fail it when they are spent", async () => {
    const f = new FakeHeadscaleApi(`hskey-api-Dd_eEfFgGhHi-${"l2".repeat(32)}`, new Date(day(90)).toISOString());
    let serverNow = day(1);
    f.now = () => new Date(serverNow);
    await f.start();
    try {
      at(day(1));
      const spent = await keys.create({ apiUrl: f.url, apiKey: f.apiKey, tags: ["tag:hm-node"], ttlSeconds: 3600 });
      serverNow = day(70);
      at(day(70));
      const fresh = await keys.create({ apiUrl: f.url, apiKey: f.apiKey, tags: ["tag:hm-node"], ttlSeconds: 3600 });
      const r = await up({ blobUrl: BLOB, apiUrl: f.url, apiKey: f.apiKey, expiration: new Date(day(90)).toISOString() }, f.url);
      assert.notEqual(r.outs.apiKey, f.apiKey);
      serverNow += 60_000;
      at(serverNow);
      await keys.delete(spent.id, spent.outs);
      await assert.rejects(keys.delete(fresh.id, fresh.outs), /HTTP 401/, "an unexpired key is never silently left");
    } finally {
      await f.stop();
    }
  });
});
