/**
 * Files of the Funnel ingress: tailscale's serve config, and the /.well-known/matrix documents that
 * send clients and federating servers to the ts.net name.
 */

/**
 * Ports Funnel listens on: the control plane grants them in the funnel-ports node capability
 * (tailscale/tailscale v1.102.3 ipn/serve.go CheckFunnelPort, tailcfg.CapabilityFunnelPorts), and
 * Tailscale's Funnel documentation (kb/1223) names 443, 8443 and 10000. The one port used here:
 * clients and federation share it (the well-known names it explicitly).
 */
export const FUNNEL_PORT = 443;

/** `<host>.<tailnet>.ts.net`: Funnel serves only names under ts.net. */
export const FUNNEL_FQDN = /^([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.ts\.net$/;

/** The device hostname (TS_HOSTNAME) of a Funnel FQDN: its first label. */
export function funnelHostname(fqdn: string): string {
  const m = FUNNEL_FQDN.exec(fqdn);
  if (!m) throw new Error(`"${fqdn}" is not <host>.<tailnet>.ts.net`);
  return m[1]!;
}

/**
 * ipn.ServeConfig, as tailscale/tailscale v1.102.3 ipn/serve.go declares it: `TCP map[uint16]*TCPPortHandler`,
 * `Web map[HostPort]*WebServerConfig` (HostPort "host:port"), `AllowFunnel map[HostPort]bool`;
 * TCPPortHandler{HTTPS bool, HTTP bool, TCPForward string, TerminateTLS string, ProxyProtocol int};
 * WebServerConfig{Handlers map[string]*HTTPHandler}; HTTPHandler{Path, Proxy, Text, Redirect string, ...}.
 * Go's encoding/json matches these names case-insensitively and ignores unknown ones, so a typo
 * would be silently dropped: test/funnel.test.ts checks every key against this declaration.
 */
export interface ServeConfig {
  TCP: Record<string, { HTTPS?: boolean; HTTP?: boolean; TCPForward?: string; TerminateTLS?: string; ProxyProtocol?: number }>;
  Web: Record<string, { Handlers: Record<string, { Proxy?: string; Path?: string; Text?: string; Redirect?: string }> }>;
  AllowFunnel: Record<string, boolean>;
}

export interface ServeConfigInput {
  /** The node's ts.net name. */
  fqdn: string;
  /**
   * Plain-HTTP URL of Traefik's funnel entrypoint on the shared overlay, e.g. http://traefik:8081.
   * tailscaled dials a Proxy backend with the container's own network and resolver
   * (tailscale/tailscale v1.102.3 ipn/ipnlocal/serve.go reverse proxy: dialer.SystemDial), so
   * Swarm's DNS name for Traefik resolves even in userspace networking.
   */
  upstream: string;
}

/**
 * Tailscale ends TLS for the ts.net name (HTTPS: true: its certificate, obtained by tailscaled for
 * the node's own name) and proxies HTTP to Traefik, which still routes and polices every request.
 * Passthrough would make Traefik hold a ts.net certificate, which only tailscaled can obtain (the
 * tailnet's cert API over its LocalAPI socket): sharing that socket with Traefik would hand it the
 * node's whole tailnet identity.
 */
export function serveConfig(i: ServeConfigInput): ServeConfig {
  if (!FUNNEL_FQDN.test(i.fqdn)) throw new Error(`serve config: "${i.fqdn}" is not <host>.<tailnet>.ts.net`);
  if (!/^http:\/\/[a-z0-9.-]+:\d{1,5}$/.test(i.upstream)) throw new Error(`serve config: upstream "${i.upstream}" is not http://host:port`);
  const hostPort = `${i.fqdn}:${FUNNEL_PORT}`;
  return {
    TCP: { [String(FUNNEL_PORT)]: { HTTPS: true } },
    Web: { [hostPort]: { Handlers: { "/": { Proxy: i.upstream } } } },
    AllowFunnel: { [hostPort]: true },
  };
}

export function renderServeConfig(i: ServeConfigInput): string {
  return `${JSON.stringify(serveConfig(i), null, 2)}\n`;
}

export interface WellKnownInput {
  /** The ts.net name serving the Matrix APIs. */
  fqdn: string;
}

/**
 * /.well-known/matrix/server and /client (matrix-org/matrix-spec content/server-server-api.md,
 * "Resolving server names" step 3; content/client-server-api/_index.md, "Well-known URIs"). The
 * server document names the port: step 3.2 ("Delegated Hostname with Port") then resolves the
 * ts.net name's A/AAAA, connects to that port with Host `<name>:443`, and demands a certificate
 * for the ts.net name, which Tailscale holds; no SRV lookup happens (SRV could not work: the
 * certificate is for the ts.net name, not for the server name).
 */
export function wellKnownDocuments(i: WellKnownInput): { server: string; client: string } {
  if (!FUNNEL_FQDN.test(i.fqdn)) throw new Error(`well-known: "${i.fqdn}" is not <host>.<tailnet>.ts.net`);
  return {
    server: JSON.stringify({ "m.server": `${i.fqdn}:${FUNNEL_PORT}` }),
    client: JSON.stringify({ "m.homeserver": { base_url: `https://${i.fqdn}` } }),
  };
}

/**
 * A Cloudflare Worker (module syntax) answering the two well-known paths of the server name with
 * the documents, CORS open as the client-server spec asks, and passing anything else on to the
 * origin (the domain's own web server, if any).
 */
export function renderWellKnownWorker(docs: { server: string; client: string }): string {
  const body = { "/.well-known/matrix/server": docs.server, "/.well-known/matrix/client": docs.client };
  return `// Generated by hardened-matrix: the /.well-known/matrix documents of the server name.
const DOCUMENTS = ${JSON.stringify(body)};
export default {
  async fetch(request) {
    const path = new URL(request.url).pathname;
    const doc = Object.prototype.hasOwnProperty.call(DOCUMENTS, path) ? DOCUMENTS[path] : undefined;
    if (doc === undefined) return fetch(request);
    return new Response(doc, {
      headers: { "content-type": "application/json", "access-control-allow-origin": "*", "cache-control": "max-age=3600" },
    });
  },
};
`;
}

/**
 * The Funnel overlay's subnet: the last /24 of the swarm's address pool. Swarm hands out the pool's
 * /24s from the first one up to networks created without a subnet (`docker swarm init
 * --default-addr-pool`, default mask 24), so the last one stays free for this network, whose fixed
 * range is what Traefik's funnel entrypoint trusts forwarded headers from. Only Funnel and Traefik
 * are on that network (not attachable), so the range is the Funnel container and Swarm's own
 * load-balancer address on it. Needs a pool of /23 or larger (settings refuse a smaller one).
 */
export function funnelSubnet(addressPool: string): string {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(addressPool);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const prefix = m ? Number(m[5]) : NaN;
  if (!m || octets.some((o) => o > 255) || !(prefix >= 8 && prefix <= 23)) {
    throw new Error(`funnel subnet: swarmAddressPool "${addressPool}" is not an IPv4 range of /8 to /23`);
  }
  const base = octets.reduce((a, o) => a * 256 + o, 0);
  const size = 2 ** (32 - prefix);
  const last24 = Math.floor(base / size) * size + size - 256;
  return `${[24, 16, 8, 0].map((s) => Math.floor(last24 / 2 ** s) % 256).join(".")}/24`;
}
