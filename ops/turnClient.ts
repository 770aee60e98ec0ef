import { createHash, createHmac, randomBytes } from "node:crypto";
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { isIPv4 } from "node:net";

/**
 * A minimal TURN client over UDP (RFC 8656 Allocate, CreatePermission, Send, Refresh; RFC 8489 message
 * format and long-term credentials), enough for the server to judge the credentials Dendrite hands out:
 * coTURN (`use-auth-secret`) recomputes base64(HMAC-SHA1(secret, username)) as the password and the
 * long-term key MD5(username:realm:password) from it.
 */

const MAGIC = 0x2112a442;
const ATTR = {
  USERNAME: 0x0006,
  MESSAGE_INTEGRITY: 0x0008,
  ERROR_CODE: 0x0009,
  LIFETIME: 0x000d,
  XOR_PEER_ADDRESS: 0x0012,
  DATA: 0x0013,
  REALM: 0x0014,
  NONCE: 0x0015,
  XOR_RELAYED_ADDRESS: 0x0016,
  REQUESTED_TRANSPORT: 0x0019,
} as const;
const METHOD = { ALLOCATE: 0x003, REFRESH: 0x004, SEND: 0x006, CREATE_PERMISSION: 0x008 } as const;
const CLASS = { request: 0x0000, indication: 0x0010, success: 0x0100, error: 0x0110 } as const;

interface Attr {
  type: number;
  value: Buffer;
}
export interface TurnResponse {
  cls: "success" | "error";
  errorCode?: number;
  errorReason?: string;
  attrs: Attr[];
}

function attr(type: number, value: Buffer): Buffer {
  const pad = (4 - (value.length % 4)) % 4;
  const head = Buffer.alloc(4);
  head.writeUInt16BE(type, 0);
  head.writeUInt16BE(value.length, 2);
  return Buffer.concat([head, value, Buffer.alloc(pad)]);
}

function xorAddress(host: string, port: number): Buffer {
  if (!isIPv4(host)) throw new Error(`TURN client: only IPv4 peers, got ${host}`);
  const b = Buffer.alloc(8);
  b.writeUInt8(0x01, 1);
  b.writeUInt16BE(port ^ (MAGIC >>> 16), 2);
  const addr = host.split(".").reduce((acc, o) => ((acc << 8) | Number(o)) >>> 0, 0);
  b.writeUInt32BE((addr ^ MAGIC) >>> 0, 4);
  return b;
}

export function parseXorAddress(v: Buffer): { host: string; port: number } {
  if (v.readUInt8(1) !== 0x01) throw new Error("TURN client: relayed address is not IPv4");
  const port = v.readUInt16BE(2) ^ (MAGIC >>> 16);
  const a = (v.readUInt32BE(4) ^ MAGIC) >>> 0;
  return { host: [24, 16, 8, 0].map((s) => (a >>> s) & 0xff).join("."), port };
}

function encode(type: number, tx: Buffer, attrs: Buffer[], key?: Buffer): Buffer {
  let body = Buffer.concat(attrs);
  const header = (len: number) => {
    const h = Buffer.alloc(20);
    h.writeUInt16BE(type, 0);
    h.writeUInt16BE(len, 2);
    h.writeUInt32BE(MAGIC, 4);
    tx.copy(h, 8);
    return h;
  };
  if (key) {
    // RFC 8489 14.5: the HMAC covers the message up to the attribute, the length field already counting it.
    const mac = createHmac("sha1", key).update(Buffer.concat([header(body.length + 24), body])).digest();
    body = Buffer.concat([body, attr(ATTR.MESSAGE_INTEGRITY, mac)]);
  }
  return Buffer.concat([header(body.length), body]);
}

function decode(msg: Buffer): { type: number; tx: Buffer; attrs: Attr[] } {
  if (msg.length < 20 || msg.readUInt32BE(4) !== MAGIC) throw new Error("TURN client: not a STUN message");
  const attrs: Attr[] = [];
  for (let off = 20; off + 4 <= msg.length; ) {
    const type = msg.readUInt16BE(off);
    const len = msg.readUInt16BE(off + 2);
    attrs.push({ type, value: msg.subarray(off + 4, off + 4 + len) });
    off += 4 + len + ((4 - (len % 4)) % 4);
  }
  return { type: msg.readUInt16BE(0), tx: msg.subarray(8, 20), attrs };
}

export class TurnClient {
  private readonly socket: Socket;
  private realm = "";
  private nonce = Buffer.alloc(0);
  private key = Buffer.alloc(0);

  constructor(
    private readonly server: { host: string; port: number },
    private readonly credentials: { username: string; password: string },
    private readonly timeoutMs = 5000,
  ) {
    this.socket = createSocket("udp4");
  }

  private transact(method: number, attrs: Buffer[], auth: boolean): Promise<TurnResponse> {
    const tx = randomBytes(12);
    const all = auth
      ? [...attrs, attr(ATTR.USERNAME, Buffer.from(this.credentials.username)), attr(ATTR.REALM, Buffer.from(this.realm)), attr(ATTR.NONCE, this.nonce)]
      : attrs;
    const packet = encode(method | CLASS.request, tx, all, auth ? this.key : undefined);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.socket.off("message", onMessage);
        reject(new Error(`no TURN answer from ${this.server.host}:${this.server.port} within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      const onMessage = (msg: Buffer) => {
        let m: ReturnType<typeof decode>;
        try {
          m = decode(msg);
        } catch {
          return;
        }
        if (!m.tx.equals(tx)) return;
        clearTimeout(timer);
        this.socket.off("message", onMessage);
        const cls = m.type & 0x0110;
        const err = m.attrs.find((a) => a.type === ATTR.ERROR_CODE)?.value;
        resolve({
          cls: cls === CLASS.success ? "success" : "error",
          errorCode: err ? err.readUInt8(2) * 100 + err.readUInt8(3) : undefined,
          errorReason: err ? err.subarray(4).toString("utf8") : undefined,
          attrs: m.attrs,
        });
      };
      this.socket.on("message", onMessage);
      this.socket.send(packet, this.server.port, this.server.host, (e) => {
        if (e) {
          clearTimeout(timer);
          this.socket.off("message", onMessage);
          reject(e);
        }
      });
    });
  }

  /** Authenticated request; on 401/438 (first contact, stale nonce) learns realm and nonce and retries once. */
  private async authed(method: number, attrs: Buffer[]): Promise<TurnResponse> {
    let r = this.realm ? await this.transact(method, attrs, true) : await this.transact(method, attrs, false);
    if (r.cls === "error" && (r.errorCode === 401 || r.errorCode === 438)) {
      const realm = r.attrs.find((a) => a.type === ATTR.REALM)?.value.toString("utf8");
      const nonce = r.attrs.find((a) => a.type === ATTR.NONCE)?.value;
      if (realm === undefined || nonce === undefined) return r;
      this.realm = realm;
      this.nonce = Buffer.from(nonce);
      this.key = createHash("md5").update(`${this.credentials.username}:${realm}:${this.credentials.password}`).digest();
      r = await this.transact(method, attrs, true);
    }
    return r;
  }

  /** Allocate a UDP relay. Returns the server's answer; `relayed` when it succeeded. */
  async allocate(): Promise<TurnResponse & { relayed?: { host: string; port: number } }> {
    const r = await this.authed(METHOD.ALLOCATE, [attr(ATTR.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0]))]);
    const relayed = r.attrs.find((a) => a.type === ATTR.XOR_RELAYED_ADDRESS);
    return { ...r, relayed: r.cls === "success" && relayed ? parseXorAddress(relayed.value) : undefined };
  }

  createPermission(peer: { host: string; port: number }): Promise<TurnResponse> {
    return this.authed(METHOD.CREATE_PERMISSION, [attr(ATTR.XOR_PEER_ADDRESS, xorAddress(peer.host, peer.port))]);
  }

  /** A Send indication (unauthenticated, unanswered): the relay forwards DATA to the peer. */
  send(peer: { host: string; port: number }, data: Buffer): void {
    const packet = encode(METHOD.SEND | CLASS.indication, randomBytes(12), [attr(ATTR.XOR_PEER_ADDRESS, xorAddress(peer.host, peer.port)), attr(ATTR.DATA, data)]);
    this.socket.send(packet, this.server.port, this.server.host);
  }

  /** Refresh with lifetime 0: frees the allocation. */
  release(): Promise<TurnResponse> {
    const zero = Buffer.alloc(4);
    return this.authed(METHOD.REFRESH, [attr(ATTR.LIFETIME, zero)]);
  }

  close(): void {
    this.socket.close();
  }
}

/** A UDP peer on `host` that resolves with the first datagram it receives (and who sent it), bounded in time. */
export async function udpPeer(host: string): Promise<{ port: number; received: Promise<{ data: Buffer; from: RemoteInfo }>; close: () => void }> {
  const s = createSocket("udp4");
  await new Promise<void>((resolve, reject) => {
    s.once("error", reject);
    s.bind(0, host, () => resolve());
  });
  const received = new Promise<{ data: Buffer; from: RemoteInfo }>((resolve) => s.once("message", (data, from) => resolve({ data, from })));
  return { port: s.address().port, received, close: () => s.close() };
}

/** "turn:host:port?transport=udp" -> host and port (3478 when absent). */
export function parseTurnUri(uri: string): { scheme: string; host: string; port: number; transport: string } {
  const m = /^(turns?):(\[[^\]]+\]|[^:?]+)(?::(\d+))?(?:\?transport=(udp|tcp))?$/.exec(uri);
  if (!m) throw new Error(`not a TURN URI: ${uri}`);
  return { scheme: m[1]!, host: m[2]!.replace(/^\[|\]$/g, ""), port: m[3] ? Number(m[3]) : m[1] === "turns" ? 5349 : 3478, transport: m[4] ?? "udp" };
}
