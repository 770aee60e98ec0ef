/**
 * Loaded (`node --import`) into the dynamic-provider host the harness serves, when the harness runs
 * the simulated network (sim/net.ts, HM_SIM_NET={"http":PORT,"https":PORT}): a connection to a
 * simulated droplet's public IPv4, or to a name the simulated DNS answers with one, goes to the
 * simulated network's server for that port on 127.0.0.1 instead. TLS keeps the name (SNI and the
 * certificate check), so the program's HeadscaleApi speaks HTTPS to the name exactly as in the
 * cloud. Everything else connects as usual.
 */
import net from "node:net";
import tls from "node:tls";
import { objectsOf, readCloud } from "./cloud";

const ports = process.env.HM_SIM_NET ? (JSON.parse(process.env.HM_SIM_NET) as { http: number; https: number }) : undefined;

/** The loopback port standing in for host:port, if host is in the simulated cloud. */
function route(host: unknown, port: unknown): number | undefined {
  if (!ports || typeof host !== "string") return undefined;
  const cloud = readCloud();
  // The simulated DNS: the name's A record, as Cloudflare would serve it.
  const record = objectsOf(cloud, "cloudflare:index/dnsRecord:DnsRecord").find((r) => r.state.type === "A" && r.state.name === host);
  const ip = /^\d+\.\d+\.\d+\.\d+$/.test(host) ? host : (record?.state.content as string | undefined);
  if (!ip || !objectsOf(cloud, "digitalocean:index/droplet:Droplet").some((d) => d.state.ipv4Address === ip)) return undefined;
  const p = Number(port);
  return p === 80 ? ports.http : p === 443 ? ports.https : undefined;
}

if (ports) {
  const connect = net.connect;
  const patched = function (this: unknown, ...args: unknown[]) {
    const o = args[0];
    if (o && typeof o === "object" && !Array.isArray(o)) {
      const opts = o as net.TcpNetConnectOpts;
      const to = route(opts.host, opts.port);
      if (to !== undefined) return (connect as (...a: unknown[]) => net.Socket).call(net, { ...opts, host: "127.0.0.1", port: to }, ...args.slice(1));
    }
    return (connect as (...a: unknown[]) => net.Socket).apply(net, args);
  } as typeof net.connect;
  net.connect = patched;
  net.createConnection = patched;

  const tlsConnect = tls.connect;
  tls.connect = function (this: unknown, ...args: unknown[]) {
    const o = args[0];
    if (o && typeof o === "object" && !Array.isArray(o)) {
      const opts = o as tls.ConnectionOptions;
      const to = route(opts.host, opts.port);
      if (to !== undefined) return (tlsConnect as (...a: unknown[]) => tls.TLSSocket).call(tls, { ...opts, host: "127.0.0.1", port: to, servername: opts.servername ?? opts.host }, ...args.slice(1));
    }
    return (tlsConnect as (...a: unknown[]) => tls.TLSSocket).apply(tls, args);
  } as typeof tls.connect;
}
