import { execFileSync } from "node:child_process";
import { constants, publicEncrypt, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import * as path from "node:path";
import { createSecureContext, type SecureContext } from "node:tls";
import { parse } from "yaml";
import { BOOTSTRAP_SCRIPT_PATH, BOOTSTRAP_UNIT } from "../../../components/render/headscaleCloudInit";
import { BLOB_NAME } from "../../../components/render/headscaleBootstrap";
import { FakeHeadscaleApi, type FakeHeadscaleSnapshot } from "../../support/fakeHeadscaleApi";
import { objectsOf, readCloud, withCloud, type CloudState, type SimObject } from "./cloud";

/**
 * The simulated cloud's network, for what the program itself dials: the Headscale control node.
 * Served on loopback by the harness process for the length of one engine operation; the
 * dynamic-provider host (the only process that dials) routes to it through netPreload.ts:
 *   http://<droplet's public IPv4>/...  -> the HTTP server (port 80 of that droplet)
 *   https://<name>/...                  -> the HTTPS server, when the simulated DNS has an A record
 *                                          for the name pointing at a droplet (port 443)
 * A droplet whose user data holds the Headscale bootstrap (render/headscaleCloudInit.ts) "runs"
 * Headscale: test/support/fakeHeadscaleApi.ts, one per state volume (the database lives there),
 * kept in the cloud file. Its first boot, once the volume is attached, does what the bootstrap
 * script does (render/headscaleBootstrap.ts): the admins' users, one API key, sealed to the public
 * key in the script, served for the script's window. Cluster droplets whose user data runs
 * `tailscale up --login-server=https://<name>` with a valid single-use pre-auth key join it.
 * TLS: a simulated CA (openssl) issues a certificate per name on first handshake, as Headscale's
 * ACME does; the dynamic-provider host trusts that CA (NODE_EXTRA_CA_CERTS) and nothing else differs.
 */
const DROPLET = "digitalocean:index/droplet:Droplet";
const DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord";

interface DropletNet {
  /** Base64 of the sealed blob and until when (ms) the bootstrap serves it. */
  blob?: string;
  servedUntil?: number;
  /** Set once tailscaled on this droplet tried its key: joined, or refused (single-use keys). */
  joined?: "joined" | "refused";
}

export interface SimHeadscale {
  /** Each Headscale database, by the id of the volume it lives on. */
  dbs: Record<string, FakeHeadscaleSnapshot>;
  droplets: Record<string, DropletNet>;
}

type WithHeadscale = CloudState & { headscale?: SimHeadscale };

export interface SimNetAddress {
  http: number;
  https: number;
}

const str = (v: unknown): string => (typeof v === "string" ? v : String(v ?? ""));

/** The bootstrap script in a droplet's user data, if the droplet is a Headscale control node. */
function bootstrapScript(droplet: SimObject): string | undefined {
  const userData = str(droplet.state.userData);
  if (!userData.includes(BOOTSTRAP_UNIT)) return undefined;
  const doc = parse(userData) as { write_files?: Array<{ path: string; content: string }> };
  return doc.write_files?.find((f) => f.path === BOOTSTRAP_SCRIPT_PATH)?.content;
}

function dropletAt(cloud: CloudState, ipv4: string): SimObject | undefined {
  return objectsOf(cloud, DROPLET).find((d) => d.state.ipv4Address === ipv4);
}

/** The simulated DNS: the A record of `name`, as Cloudflare serves it. */
export function resolveA(cloud: CloudState, name: string): string | undefined {
  return objectsOf(cloud, DNS_RECORD).find((r) => r.state.type === "A" && r.state.name === name)?.state.content as string | undefined;
}

export class SimNet {
  private readonly fakes = new Map<string, FakeHeadscaleApi>();
  private readonly contexts = new Map<string, SecureContext>();
  private http?: Server;
  private https?: Server;
  readonly ca: string;

  private constructor(
    private readonly cloudFile: string,
    private readonly dir: string,
  ) {
    this.ca = path.join(dir, "ca.pem");
  }

  /** Starts both servers on 127.0.0.1 and loads the Headscale databases from the cloud file. */
  static async start(cloudFile: string, dir: string): Promise<SimNet> {
    mkdirSync(dir, { recursive: true });
    const net = new SimNet(cloudFile, dir);
    net.makeCa();
    const state = (readCloud(cloudFile) as WithHeadscale).headscale ?? { dbs: {}, droplets: {} };
    for (const [volume, snap] of Object.entries(state.dbs)) await net.fakeFor(volume, snap);
    net.http = createHttpServer((req, res) => void net.serveHttp(req, res));
    net.https = createHttpsServer({ SNICallback: (name, cb) => cb(null, net.contextFor(name)) }, (req, res) => void net.serveHttps(req, res));
    for (const s of [net.http, net.https]) await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
    return net;
  }

  address(): SimNetAddress {
    const port = (s?: Server) => (s?.address() as { port: number }).port;
    return { http: port(this.http), https: port(this.https) };
  }

  /** What the dynamic-provider host needs in its environment (netPreload.ts reads HM_SIM_NET). */
  env(): Record<string, string> {
    return { HM_SIM_NET: JSON.stringify(this.address()), NODE_EXTRA_CA_CERTS: this.ca };
  }

  async stop(): Promise<void> {
    for (const s of [this.http, this.https]) if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
    for (const f of this.fakes.values()) await f.stop();
  }

  private makeCa(): void {
    if (existsSync(this.ca)) return;
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=hardened-matrix simulated CA", "-keyout", path.join(this.dir, "ca.key"), "-out", this.ca], { stdio: "ignore" });
  }

  /** A certificate for `name` from the simulated CA, made on the first handshake (as ACME would). */
  private contextFor(name: string): SecureContext {
    let ctx = this.contexts.get(name);
    if (ctx) return ctx;
    if (!/^[a-z0-9.-]+$/.test(name)) throw new Error(`no certificate for ${name}`);
    const key = path.join(this.dir, `${name}.key`);
    const csr = path.join(this.dir, `${name}.csr`);
    const crt = path.join(this.dir, `${name}.pem`);
    const ext = path.join(this.dir, `${name}.ext`);
    if (!existsSync(crt)) {
      execFileSync("openssl", ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", `/CN=${name}`, "-keyout", key, "-out", csr], { stdio: "ignore" });
      writeFileSync(ext, `subjectAltName=DNS:${name}\n`);
      execFileSync("openssl", ["x509", "-req", "-in", csr, "-CA", this.ca, "-CAkey", path.join(this.dir, "ca.key"), "-CAcreateserial", "-days", "7", "-extfile", ext, "-out", crt], { stdio: "ignore" });
    }
    ctx = createSecureContext({ key: readFileSync(key), cert: readFileSync(crt) });
    this.contexts.set(name, ctx);
    return ctx;
  }

  private async fakeFor(volume: string, snap?: FakeHeadscaleSnapshot, firstKey?: { key: string; expiration: string }): Promise<FakeHeadscaleApi> {
    let fake = this.fakes.get(volume);
    if (fake) return fake;
    if (snap) {
      const k = snap.apiKeys[0]!;
      fake = new FakeHeadscaleApi(`hskey-api-${k.prefix}-${k.secret}`, k.expiration);
      fake.restore(snap);
    } else fake = new FakeHeadscaleApi(firstKey!.key, firstKey!.expiration);
    await fake.start();
    this.fakes.set(volume, fake);
    return fake;
  }

  private save(change: (h: SimHeadscale) => void): void {
    withCloud((c) => {
      const w = c as WithHeadscale;
      w.headscale ??= { dbs: {}, droplets: {} };
      change(w.headscale);
      for (const [volume, fake] of this.fakes) w.headscale.dbs[volume] = fake.snapshot();
    }, this.cloudFile);
  }

  /** Port 80 of a droplet: only a Headscale control node's bootstrap listens there. */
  private async serveHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const host = (req.headers.host ?? "").replace(/:\d+$/, "");
    const cloud = readCloud(this.cloudFile) as WithHeadscale;
    const droplet = dropletAt(cloud, host);
    const script = droplet && bootstrapScript(droplet);
    if (!droplet || !script) return void res.writeHead(502).end(`nothing listens on ${host}:80 in the simulated cloud`);
    const volume = ((droplet.state.volumeIds as string[] | undefined) ?? [])[0];
    // First boot waits for the state volume before Headscale starts; the bootstrap waits for Headscale.
    if (!volume) return void res.writeHead(404).end("Headscale has not started (its volume is not attached yet)");
    let state = cloud.headscale?.droplets[droplet.id];
    if (!state?.blob) state = await this.bootstrap(droplet.id, volume, script);
    if (req.url !== `/${BLOB_NAME}` || Date.now() > (state.servedUntil ?? 0)) return void res.writeHead(404).end();
    res.writeHead(200, { "Content-Type": "application/octet-stream" }).end(Buffer.from(state.blob!, "base64"));
  }

  /** What render/headscaleBootstrap.ts's script does at first boot, read from that very script. */
  private async bootstrap(dropletId: string, volume: string, script: string): Promise<DropletNet> {
    const pem = /<<'PEM'\n([\s\S]+?)\nPEM\n/.exec(script)?.[1];
    const days = Number(/apikeys create --expiration '(\d+)d'/.exec(script)?.[1]);
    const window = Number(/timeout (\d+) python3/.exec(script)?.[1]);
    if (!pem || !days || !window) throw new Error("the simulated cloud cannot read the Headscale bootstrap script");
    const b64url = (n: number) => [...randomBytes(n)].map((b) => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[b % 64]).join("");
    const key = `hskey-api-${b64url(12)}-${b64url(64)}`;
    const expiration = new Date(Date.now() + days * 86_400_000).toISOString();
    const existing = this.fakes.has(volume);
    const fake = await this.fakeFor(volume, undefined, { key, expiration });
    if (existing) fake.addApiKey(key, expiration);
    for (const [, name, email] of script.matchAll(/^ensure_user '([^']+)' '([^']+)'$/gm)) {
      if (!fake.users.some((u) => u.email === email)) fake.users.push({ id: String(fake.users.length + 1), name: name!, email: email! });
    }
    const blob = publicEncrypt({ key: pem, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, Buffer.from(key));
    const state: DropletNet = { blob: blob.toString("base64"), servedUntil: Date.now() + window * 1000 };
    this.save((h) => (h.droplets[dropletId] = { ...h.droplets[dropletId], ...state }));
    return state;
  }

  /** Port 443 of the droplet the name resolves to: Headscale's API, reached through its own TLS. */
  private async serveHttps(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const name = (req.headers.host ?? "").replace(/:\d+$/, "");
    const cloud = readCloud(this.cloudFile) as WithHeadscale;
    const droplet = dropletAt(cloud, resolveA(cloud, name) ?? "");
    const volume = droplet && bootstrapScript(droplet) ? ((droplet.state.volumeIds as string[] | undefined) ?? [])[0] : undefined;
    const fake = volume ? this.fakes.get(volume) : undefined;
    if (!fake) return void res.writeHead(502).end(`no Headscale answers at ${name} in the simulated cloud`);
    this.joins(cloud, name, fake);
    let body = "";
    for await (const chunk of req) body += String(chunk);
    const upstream = await new Promise<{ status: number; type: string; text: string }>((resolve, reject) => {
      const u = new URL(fake.url);
      const r = request({ host: u.hostname, port: u.port, method: req.method, path: req.url, headers: { ...req.headers, host: u.host } }, (answer) => {
        let text = "";
        answer.on("data", (d) => (text += String(d)));
        answer.on("end", () => resolve({ status: answer.statusCode ?? 500, type: String(answer.headers["content-type"] ?? "text/plain"), text }));
      });
      r.on("error", reject);
      r.end(body);
    });
    this.save(() => undefined);
    res.writeHead(upstream.status, { "Content-Type": upstream.type }).end(upstream.text);
  }

  /**
   * Cluster droplets that run `tailscale up --login-server=https://<name>` with a pre-auth key:
   * each tries once (single-use keys); Headscale takes a known, unused, unexpired key, and names
   * the node by its hostname (the fake's `join`), a minute after the droplet was created.
   */
  private joins(cloud: WithHeadscale, name: string, fake: FakeHeadscaleApi): void {
    const tried: Record<string, DropletNet["joined"]> = {};
    for (const d of objectsOf(cloud, DROPLET)) {
      const userData = str(d.state.userData);
      if (!userData.includes(`--login-server=https://${name}`) || cloud.headscale?.droplets[d.id]?.joined) continue;
      const m = /hskey-auth-([0-9a-f]{12})-([0-9a-f]{64})/.exec(userData);
      const key = m ? [...fake.keys.values()].find((k) => k.prefix === m[1] && k.secret === m[2]) : undefined;
      const usable = key && !key.used && !(key.expiration !== undefined && Date.parse(key.expiration) <= Date.now());
      if (!usable) {
        tried[d.id] = "refused";
        continue;
      }
      key.used = true;
      const n = fake.nodes.length + 1;
      fake.join(str(d.state.name), key.aclTags, `100.64.1.${n}`, new Date(Date.parse(d.createdAt) + 60_000).toISOString());
      tried[d.id] = "joined";
    }
    if (Object.keys(tried).length > 0) this.save((h) => Object.entries(tried).forEach(([id, j]) => (h.droplets[id] = { ...h.droplets[id], joined: j })));
  }
}
