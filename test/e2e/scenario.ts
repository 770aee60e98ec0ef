import { createHmac, randomBytes } from "node:crypto";
import { lookup } from "node:dns/promises";
import { ClientEvent, createClient, KnownMembership, Preset, RoomEvent, type MatrixClient, type MatrixEvent, type Room } from "matrix-js-sdk";
import { parseTurnUri, TurnClient, udpPeer } from "../../ops/turnClient";

/**
 * The client scenario of issue 17, driven by matrix-js-sdk (a maintained Matrix client library) against
 * a client base URL: what a user does (register through the admin path, log in, a room, messages, media,
 * TURN) and what must be refused. Each step is named and fails with a message saying what was seen.
 *
 * Steps marked `needs: "traefik"` test the project's routing (admin paths not routed, media behind a
 * token, HTTP redirected): they only mean something through Traefik and run when `traefik` is given.
 * Steps marked `needs: "adminPath"` talk to Dendrite straight (its admin API), as only an operator can.
 */

export interface ScenarioTarget {
  /** Where clients reach the client API: Dendrite straight (host stack) or Traefik (https://...). */
  clientBaseUrl: string;
  /** Matrix server name: user IDs are @name:serverName. */
  serverName: string;
  /** What /.well-known/matrix/client must name as m.homeserver.base_url (the rendered value). */
  wellKnownBaseUrl: string;
  /** Creates an account the way the project does (create-account with the shared secret, over the admin path). */
  register: (localpart: string, password: string) => Promise<void>;
  /** Dendrite straight, for the admin-path check that the shared secret is required (host stack only). */
  adminPath?: { dendriteUrl: string };
  /** Traefik in front: its plain-HTTP URL (the `web` entrypoint). Enables the `needs: "traefik"` steps. */
  traefik?: { httpUrl: string };
  /** Peer address for the relay data check: must be one the TURN server may relay to (its external-ip). */
  turnPeerHost?: string;
  /** Peers the TURN server must refuse to relay to (its denied-peer-ip ranges). Default 10.0.0.1. */
  turnDeniedPeers?: string[];
  /** Restarts every service; the messages must survive it. */
  restart?: () => Promise<void>;
  /** Per-wait bound (sync, invite, message). */
  timeoutMs?: number;
  /** IPv4 address of a host named in a TURN URI; default the system resolver (a pinned stack answers for its own name). */
  resolve?: (host: string) => Promise<string>;
}

export interface StepResult {
  name: string;
  status: "ok" | "failed" | "skipped";
  detail: string;
  ms: number;
}

interface Step {
  name: string;
  needs?: "traefik" | "adminPath" | "restart" | "turnPeer";
  /** Steps whose failure makes this one meaningless. */
  after?: string[];
  run: () => Promise<string | void>;
}

class StepFailure extends Error {}
function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new StepFailure(message);
}

async function http(url: string, init: RequestInit = {}): Promise<{ status: number; body: string; json: Record<string, unknown> | undefined; headers: Headers }> {
  const r = await fetch(url, { ...init, redirect: "manual", signal: AbortSignal.timeout(15_000) });
  const body = await r.text();
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(body) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: r.status, body, json, headers: r.headers };
}

function waitFor<T>(what: string, ms: number, subscribe: (done: (v: T) => void) => () => void): Promise<T> {
  return new Promise((resolve, reject) => {
    let unsubscribe: () => void = () => undefined;
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new StepFailure(`${what}: not within ${ms} ms`));
    }, ms);
    unsubscribe = subscribe((v) => {
      clearTimeout(timer);
      unsubscribe();
      resolve(v);
    });
  });
}

export async function runScenario(t: ScenarioTarget, report: (r: StepResult) => void = () => undefined): Promise<StepResult[]> {
  const base = t.clientBaseUrl.replace(/\/+$/, "");
  const timeout = t.timeoutMs ?? 60_000;
  const run = randomBytes(3).toString("hex");
  const users = {
    alice: { localpart: `e2e-alice-${run}`, password: randomBytes(18).toString("base64url"), id: "", token: "", client: undefined as MatrixClient | undefined },
    bob: { localpart: `e2e-bob-${run}`, password: randomBytes(18).toString("base64url"), id: "", token: "", client: undefined as MatrixClient | undefined },
  };
  for (const u of Object.values(users)) u.id = `@${u.localpart}:${t.serverName}`;
  let roomId = "";
  const texts = { fromAlice: `hello from alice ${run}`, fromBob: `hello from bob ${run}` };
  let mxc = "";
  const media = randomBytes(64 * 1024);
  let turn: { uris: string[]; username: string; password: string; ttl: number } | undefined;

  const client = (u: (typeof users)["alice"]): MatrixClient => {
    check(u.client, `${u.localpart} is not logged in`);
    return u.client;
  };
  const auth = (u: (typeof users)["alice"]) => ({ Authorization: `Bearer ${u.token}` });

  const steps: Step[] = [
    {
      name: "client API answers /_matrix/client/versions",
      run: async () => {
        const c = createClient({ baseUrl: base });
        const v = await c.getVersions();
        check(Array.isArray(v.versions) && v.versions.length > 0, `no spec versions in ${JSON.stringify(v)}`);
        // Authenticated media (MSC3916) is what clients use for media here.
        check(v.unstable_features?.["org.matrix.msc3916.stable"] === true, "the server does not advertise authenticated media (org.matrix.msc3916.stable)");
        return `versions ${v.versions.join(" ")}`;
      },
    },
    {
      name: "/.well-known/matrix/client names the client base URL",
      run: async () => {
        const r = await http(`${base}/.well-known/matrix/client`);
        check(r.status === 200, `expected 200, got ${r.status}: ${r.body.slice(0, 200)}`);
        const hs = (r.json?.["m.homeserver"] as { base_url?: string } | undefined)?.base_url;
        check(hs === t.wellKnownBaseUrl, `m.homeserver.base_url is ${JSON.stringify(hs)}, the stack says ${t.wellKnownBaseUrl}`);
        return hs;
      },
    },
    {
      name: "registration without the shared secret is refused",
      run: async () => {
        const r = await http(`${base}/_matrix/client/v3/register`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ username: `e2e-intruder-${run}`, password: randomBytes(12).toString("hex"), auth: { type: "m.login.dummy" } }),
        });
        check(r.status === 403 || r.status === 401 || r.status === 404, `open registration answered ${r.status}: ${r.body.slice(0, 200)}`);
        check(r.json?.access_token === undefined, "open registration handed out an access token");
        return `${r.status} ${String(r.json?.errcode ?? "")}`;
      },
    },
    {
      name: "shared-secret registration with a wrong secret is refused (admin path)",
      needs: "adminPath",
      run: async () => {
        const url = `${t.adminPath!.dendriteUrl.replace(/\/+$/, "")}/_synapse/admin/v1/register`;
        const n = await http(url);
        const nonce = n.json?.nonce;
        check(typeof nonce === "string", `no nonce from ${url}: ${n.status} ${n.body.slice(0, 200)}`);
        const username = `e2e-forged-${run}`;
        const password = randomBytes(12).toString("hex");
        // Synapse's shared-secret MAC (Dendrite clientapi/routing/admin_register): HMAC-SHA1 of nonce\0user\0password\0notadmin.
        const mac = createHmac("sha1", "not-the-secret").update(`${nonce}\0${username}\0${password}\0notadmin`).digest("hex");
        const r = await http(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ nonce, username, password, admin: false, mac }) });
        check(r.status >= 400 && r.status < 500, `a forged MAC answered ${r.status}: ${r.body.slice(0, 200)}`);
        check(r.json?.access_token === undefined, "a forged MAC got an access token");
        return `${r.status} ${String(r.json?.errcode ?? "")}`;
      },
    },
    {
      name: "two users registered with the shared secret (admin path)",
      run: async () => {
        await t.register(users.alice.localpart, users.alice.password);
        await t.register(users.bob.localpart, users.bob.password);
        return `${users.alice.id}, ${users.bob.id}`;
      },
    },
    {
      name: "both users log in with their password",
      after: ["two users registered with the shared secret (admin path)"],
      run: async () => {
        for (const u of Object.values(users)) {
          const anon = createClient({ baseUrl: base });
          const r = await anon.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: u.localpart }, password: u.password, initial_device_display_name: "hardened-matrix e2e" });
          check(r.user_id === u.id, `login returned ${r.user_id}, expected ${u.id}`);
          u.token = r.access_token;
          u.client = createClient({ baseUrl: base, accessToken: r.access_token, userId: r.user_id, deviceId: r.device_id });
        }
        const wrong = await http(`${base}/_matrix/client/v3/login`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: users.alice.localpart }, password: "wrong-password" }),
        });
        check(wrong.status === 403, `a wrong password answered ${wrong.status}, expected 403`);
      },
    },
    {
      name: "both clients sync",
      after: ["both users log in with their password"],
      run: async () => {
        await Promise.all(
          Object.values(users).map(async (u) => {
            const c = client(u);
            const prepared = waitFor(`${u.localpart}'s first sync`, timeout, (done) => {
              const on = (state: string) => {
                if (state === "PREPARED" || state === "SYNCING") done(state);
              };
              c.on(ClientEvent.Sync, on);
              return () => c.off(ClientEvent.Sync, on);
            });
            await c.startClient({ initialSyncLimit: 10, lazyLoadMembers: true });
            await prepared;
          }),
        );
      },
    },
    {
      name: "alice creates a room and invites bob; bob sees the invite by sync and joins",
      after: ["both clients sync"],
      run: async () => {
        const bob = client(users.bob);
        const invited = waitFor<Room>("bob's invite through /sync", timeout, (done) => {
          const on = (room: Room, membership: string) => {
            if (membership === KnownMembership.Invite) done(room);
          };
          bob.on(RoomEvent.MyMembership, on);
          return () => bob.off(RoomEvent.MyMembership, on);
        });
        const created = await client(users.alice).createRoom({ preset: Preset.PrivateChat, name: `e2e ${run}`, invite: [users.bob.id] });
        roomId = created.room_id;
        const room = await invited;
        check(room.roomId === roomId, `bob was invited to ${room.roomId}, not ${roomId}`);
        await bob.joinRoom(roomId);
        return roomId;
      },
    },
    {
      name: "messages both ways arrive by sync",
      after: ["alice creates a room and invites bob; bob sees the invite by sync and joins"],
      run: async () => {
        const exchange = async (from: (typeof users)["alice"], to: (typeof users)["alice"], body: string) => {
          const receiver = client(to);
          const arrived = waitFor<MatrixEvent>(`"${body}" at ${to.localpart} through /sync`, timeout, (done) => {
            const on = (ev: MatrixEvent, room: Room | undefined) => {
              if (room?.roomId === roomId && ev.getType() === "m.room.message" && ev.getContent().body === body) done(ev);
            };
            receiver.on(RoomEvent.Timeline, on);
            return () => receiver.off(RoomEvent.Timeline, on);
          });
          const sent = await client(from).sendTextMessage(roomId, body);
          const ev = await arrived;
          check(ev.getId() === sent.event_id, `received event ${ev.getId()}, sent ${sent.event_id}`);
          check(ev.getSender() === from.id, `sender is ${ev.getSender()}, expected ${from.id}`);
        };
        await exchange(users.alice, users.bob, texts.fromAlice);
        await exchange(users.bob, users.alice, texts.fromBob);
      },
    },
    {
      name: "media: alice uploads, bob downloads it with his token (authenticated media)",
      after: ["both users log in with their password"],
      run: async () => {
        const up = await client(users.alice).uploadContent(new Blob([media]), { name: `e2e-${run}.bin`, type: "application/octet-stream" });
        mxc = up.content_uri;
        check(mxc.startsWith(`mxc://${t.serverName}/`), `content URI ${mxc} is not on ${t.serverName}`);
        const url = client(users.bob).mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true);
        check(url && url.includes("/_matrix/client/v1/media/download/"), `the client built ${url} for authenticated media`);
        const r = await fetch(url, { headers: auth(users.bob), signal: AbortSignal.timeout(15_000) });
        check(r.status === 200, `download with a token answered ${r.status}`);
        const got = Buffer.from(await r.arrayBuffer());
        check(got.equals(media), `downloaded ${got.length} bytes, not the ${media.length} uploaded`);
        return mxc;
      },
    },
    {
      name: "media: download without a token is refused (authenticated media)",
      after: ["media: alice uploads, bob downloads it with his token (authenticated media)"],
      run: async () => {
        const url = client(users.bob).mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true)!;
        const r = await http(url);
        check(r.status === 401, `download without a token answered ${r.status}, expected 401`);
        return `${r.status} ${String(r.json?.errcode ?? "")}`;
      },
    },
    {
      name: "media: legacy /_matrix/media/v3/download needs a token at Traefik",
      needs: "traefik",
      after: ["media: alice uploads, bob downloads it with his token (authenticated media)"],
      run: async () => {
        const url = client(users.bob).mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, false)!;
        check(url.includes("/_matrix/media/v3/download/"), `the client built ${url} for legacy media`);
        const anon = await http(url);
        check(anon.status === 401, `legacy download without a token answered ${anon.status}, expected 401 from the token check`);
        const withToken = await fetch(url, { headers: auth(users.bob), signal: AbortSignal.timeout(15_000) });
        check(withToken.status === 200, `legacy download with a token answered ${withToken.status}`);
      },
    },
    {
      name: "TURN: /voip/turnServer hands out credentials",
      after: ["both users log in with their password"],
      run: async () => {
        const r = await client(users.bob).turnServer();
        check(Array.isArray(r.uris) && r.uris.length > 0, `no TURN URIs in ${JSON.stringify(r)} (Dendrite answers {} when turn_uris or turn_user_lifetime is empty)`);
        const [expiry, ...rest] = r.username.split(":");
        check(rest.join(":") === users.bob.id && Number(expiry) > Date.now() / 1000, `username ${r.username} is not "<future expiry>:${users.bob.id}"`);
        turn = { uris: r.uris, username: r.username, password: r.password, ttl: r.ttl };
        return `${r.uris.join(", ")}; ttl ${r.ttl} s`;
      },
    },
    {
      name: "TURN: coTURN allocates a relay with those credentials and refuses a wrong password",
      after: ["TURN: /voip/turnServer hands out credentials"],
      run: async () => {
        const uri = turn!.uris.map(parseTurnUri).find((u) => u.scheme === "turn" && u.transport === "udp");
        check(uri, `no turn:...?transport=udp URI among ${turn!.uris.join(", ")}`);
        const host = t.resolve ? await t.resolve(uri.host) : (await lookup(uri.host, { family: 4 })).address;
        const good = new TurnClient({ host, port: uri.port }, turn!);
        const bad = new TurnClient({ host, port: uri.port }, { username: turn!.username, password: "d3Jvbmc=" });
        try {
          const a = await good.allocate();
          check(a.cls === "success" && a.relayed, `Allocate answered ${a.errorCode ?? ""} ${a.errorReason ?? a.cls}`);
          const refused = await bad.allocate();
          check(refused.cls === "error" && refused.errorCode === 401, `Allocate with a wrong password answered ${refused.cls} ${refused.errorCode ?? ""}`);
          // Private ranges are denied peers (the rendered denied-peer-ip list).
          for (const host of t.turnDeniedPeers ?? ["10.0.0.1"]) {
            const denied = await good.createPermission({ host, port: 9 });
            check(denied.cls === "error" && denied.errorCode === 403, `a permission for the denied peer ${host} answered ${denied.cls} ${denied.errorCode ?? ""}, expected 403`);
          }
          if (t.turnPeerHost) {
            const peer = await udpPeer(t.turnPeerHost);
            try {
              const p = await good.createPermission({ host: t.turnPeerHost, port: peer.port });
              check(p.cls === "success", `CreatePermission for ${t.turnPeerHost} answered ${p.errorCode ?? ""} ${p.errorReason ?? ""}`);
              const payload = Buffer.from(`relay ${run}`);
              good.send({ host: t.turnPeerHost, port: peer.port }, payload);
              const got = await Promise.race([peer.received, new Promise<never>((_, rej) => setTimeout(() => rej(new StepFailure("the peer received nothing through the relay within 5 s")), 5000))]);
              check(got.data.equals(payload) && got.from.port === a.relayed.port, `the peer got ${got.data.length} bytes from port ${got.from.port}, relay is ${a.relayed.port}`);
            } finally {
              peer.close();
            }
          }
          const released = await good.release();
          check(released.cls === "success", `Refresh(lifetime 0) answered ${released.errorCode ?? ""}`);
          return `relay ${a.relayed.host}:${a.relayed.port}${t.turnPeerHost ? ", data relayed to a peer" : ""}`;
        } finally {
          good.close();
          bad.close();
        }
      },
    },
    {
      name: "admin paths /_dendrite/ and /_synapse/ are not reachable through Traefik",
      needs: "traefik",
      run: async () => {
        const seen: string[] = [];
        for (const path of ["/_dendrite/admin/evacuateUser/@x:y", "/_dendrite/monitor/up", "/_synapse/admin/v1/register", "/_synapse/admin/v1/users/@x:y"]) {
          for (const method of ["GET", "POST"]) {
            const r = await http(`${base}${path}`, { method, ...(method === "POST" ? { body: "{}", headers: { "Content-Type": "application/json" } } : {}) });
            seen.push(`${method} ${path} ${r.status}`);
            check(r.status === 404, `${method} ${path} answered ${r.status}, expected 404 (not routed): ${r.body.slice(0, 120)}`);
            check(r.json?.nonce === undefined, `${path} handed out a registration nonce`);
          }
        }
        return seen.join("; ");
      },
    },
    {
      name: "room directory: a browser's CORS preflight is answered, the directory itself needs a token",
      needs: "traefik",
      after: ["both users log in with their password"],
      run: async () => {
        const url = `${base}/_matrix/client/v3/publicRooms`;
        // What a browser sends before Element Web (another origin) asks with its Authorization header.
        const pre = await http(url, { method: "OPTIONS", headers: { Origin: "https://app.element.io", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization" } });
        const allowHeaders = (pre.headers.get("access-control-allow-headers") ?? "").toLowerCase();
        check(pre.status >= 200 && pre.status < 300, `the preflight answered ${pre.status}: ${pre.body.slice(0, 120)}`);
        check(pre.headers.get("access-control-allow-origin") !== null && /\bauthorization\b/.test(allowHeaders), `the preflight allows origin ${pre.headers.get("access-control-allow-origin")}, headers "${allowHeaders}"`);
        check(pre.json?.chunk === undefined, "the preflight returned the room directory");
        const anon = await http(url);
        check(anon.status === 401 && anon.json?.chunk === undefined, `publicRooms without a token answered ${anon.status}: ${anon.body.slice(0, 120)}`);
        const withToken = await http(url, { headers: auth(users.bob) });
        check(withToken.status === 200 && Array.isArray(withToken.json?.chunk), `publicRooms with bob's token answered ${withToken.status}`);
        return `OPTIONS ${pre.status}, without a token ${anon.status}, with one ${withToken.status}`;
      },
    },
    {
      name: "plain HTTP serves no Matrix API (redirects to HTTPS)",
      needs: "traefik",
      run: async () => {
        const url = `${t.traefik!.httpUrl.replace(/\/+$/, "")}/_matrix/client/versions`;
        const r = await http(url);
        check(r.status >= 300 && r.status < 400, `plain HTTP answered ${r.status}, expected a redirect: ${r.body.slice(0, 120)}`);
        const loc = r.headers.get("location") ?? "";
        check(loc.startsWith("https://"), `redirect goes to "${loc}", not https://`);
        check(r.json?.versions === undefined, "plain HTTP served the client API");
        return `${r.status} -> ${loc}`;
      },
    },
    {
      name: "a restart of every service loses no message",
      needs: "restart",
      after: ["messages both ways arrive by sync", "media: alice uploads, bob downloads it with his token (authenticated media)"],
      run: async () => {
        for (const u of Object.values(users)) u.client?.stopClient();
        await t.restart!();
        const url = `${base}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=50`;
        const r = await http(url, { headers: auth(users.bob) });
        check(r.status === 200, `/messages after the restart answered ${r.status}: ${r.body.slice(0, 200)}`);
        const bodies = ((r.json?.chunk ?? []) as { content?: { body?: string } }[]).map((e) => e.content?.body);
        for (const want of Object.values(texts)) check(bodies.includes(want), `"${want}" is gone after the restart`);
        const m = await fetch(client(users.bob).mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true)!, { headers: auth(users.bob), signal: AbortSignal.timeout(15_000) });
        check(m.status === 200 && Buffer.from(await m.arrayBuffer()).equals(media), `the uploaded media is gone after the restart (${m.status})`);
      },
    },
  ];

  const results: StepResult[] = [];
  try {
    for (const s of steps) {
      const started = Date.now();
      const have = { traefik: t.traefik !== undefined, adminPath: t.adminPath !== undefined, restart: t.restart !== undefined, turnPeer: t.turnPeerHost !== undefined };
      const blocked = s.after?.find((n) => results.find((r) => r.name === n)?.status !== "ok");
      let result: StepResult;
      if (s.needs && !have[s.needs]) {
        result = { name: s.name, status: "skipped", detail: s.needs === "traefik" ? "needs Traefik in front (give the scenario its URLs)" : `needs ${s.needs}`, ms: 0 };
      } else if (blocked) {
        result = { name: s.name, status: "failed", detail: `not run: "${blocked}" did not pass`, ms: 0 };
      } else {
        try {
          const detail = await s.run();
          result = { name: s.name, status: "ok", detail: detail ?? "", ms: Date.now() - started };
        } catch (e) {
          // undici's "fetch failed" says why only in its cause (refused, reset, a certificate, a lookup).
          const cause = e instanceof Error && e.cause instanceof Error ? `: ${e.cause.message}` : "";
          const msg = `${e instanceof Error ? e.message : String(e)}${cause}`;
          result = { name: s.name, status: "failed", detail: e instanceof StepFailure ? msg : `unexpected error: ${msg}`, ms: Date.now() - started };
        }
      }
      results.push(result);
      report(result);
    }
  } finally {
    for (const u of Object.values(users)) u.client?.stopClient();
  }
  return results;
}

export function formatResult(r: StepResult): string {
  const tag = r.status === "ok" ? "ok  " : r.status === "skipped" ? "skip" : "FAIL";
  return `${tag} ${r.name}${r.detail ? ` - ${r.detail}` : ""}${r.ms ? ` (${r.ms} ms)` : ""}`;
}
