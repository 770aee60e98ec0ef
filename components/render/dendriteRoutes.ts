/**
 * Traefik routes for Dendrite, as Swarm service labels. Only the Matrix API prefixes are routed:
 * Dendrite's admin paths (/_dendrite/, /_synapse/) match no router, so Traefik answers 404.
 */

/** Middleware admitting only requests whose Matrix access token Dendrite accepts. */
export const REQUIRE_TOKEN = "matrix-require-token";
export const WELL_KNOWN_CORS = "matrix-well-known-cors@file";
/** Middleware admitting only federation requests from an allowed origin (the federation gate decides). */
export const FEDERATION_ALLOWLIST = "matrix-federation-allowlist";

export interface DendriteRoutesInput {
  /** Swarm service/Traefik service name and Dendrite's HTTP port. */
  service: string;
  port: number;
  edgeNetwork: string;
  /** Host serving the client API and media. */
  matrixHost: string;
  /** Extra host serving /.well-known/matrix/ (the server name, when it delegates here). */
  wellKnownHost?: string;
  /** `gateAddress`: the federation gate's forwardAuth URL, required for "allowlist". */
  federation: { mode: "open" | "closed" | "allowlist"; gateAddress?: string };
  certResolver?: string;
  /**
   * SRV delegation: remote servers connect to the SRV target with SNI and Host set to the server name
   * and demand a certificate for it (Matrix server-server API, "Resolving server names"). The
   * federation routers have no Host rule, so they match that Host, but ACME must be told the name.
   */
  federationCertDomain?: string;
  /**
   * Ingress funnel: every router sits on this one plain-HTTP entrypoint, which only the Funnel
   * container reaches (Tailscale ended TLS for the ts.net name); client and federation APIs share
   * port 443 there, as /.well-known/matrix/server says.
   */
  funnelEntryPoint?: string;
}

export function dendriteRouterLabels(i: DendriteRoutesInput): Record<string, string> {
  const labels: Record<string, string> = {
    "traefik.enable": "true",
    "traefik.swarm.network": i.edgeNetwork,
    [`traefik.http.services.${i.service}.loadbalancer.server.port`]: String(i.port),
  };
  const router = (name: string, entryPoint: "websecure" | "federation", rule: string, extra: { middlewares?: string[]; priority?: number } = {}) => {
    const key = `traefik.http.routers.${i.service}-${name}`;
    labels[`${key}.entrypoints`] = i.funnelEntryPoint ?? entryPoint;
    labels[`${key}.rule`] = rule;
    labels[`${key}.service`] = i.service;
    if (i.funnelEntryPoint) {
      if (extra.middlewares) labels[`${key}.middlewares`] = extra.middlewares.join(",");
      if (extra.priority !== undefined) labels[`${key}.priority`] = String(extra.priority);
      return;
    }
    labels[`${key}.tls`] = "true";
    if (i.certResolver) labels[`${key}.tls.certresolver`] = i.certResolver;
    // traefik/traefik v3.7 pkg/provider/acme/provider.go watchNewDomains: a router's tls.domains are requested as given.
    if (entryPoint === "federation" && i.federationCertDomain) labels[`${key}.tls.domains[0].main`] = i.federationCertDomain;
    if (extra.middlewares) labels[`${key}.middlewares`] = extra.middlewares.join(",");
    if (extra.priority !== undefined) labels[`${key}.priority`] = String(extra.priority);
  };
  const host = `Host(\`${i.matrixHost}\`)`;

  router("client", "websecure", `${host} && (PathPrefix(\`/_matrix/client/\`) || PathPrefix(\`/_matrix/media/\`))`);
  // Dendrite serves the room directory to anyone and has no option against it: Traefik asks
  // Dendrite whether the caller's access token is valid (whoami) before passing the request on.
  // The token must come in the Authorization header: query-string tokens (`?access_token=`) were
  // deprecated in Matrix spec v1.11 and removed in v1.20 (matrix-org/matrix-spec
  // content/client-server-api/_index.md, "Using access tokens"), and whoami sees no query here.
  labels[`traefik.http.middlewares.${REQUIRE_TOKEN}.forwardauth.address`] = `http://${i.service}:${i.port}/_matrix/client/v3/account/whoami`;
  labels[`traefik.http.middlewares.${REQUIRE_TOKEN}.forwardauth.trustForwardHeader`] = "false";
  // A browser's CORS preflight carries no token (Fetch standard, "CORS-preflight request"): behind the
  // token check it got whoami's 401 and Element Web on another origin could not list rooms. OPTIONS
  // goes to the client router instead, where Dendrite answers it with CORS headers and never runs the
  // handler (internal/httputil/httpapi.go MakeExternalAPI -> matrix-org/util json.go MakeJSONAPI).
  router("public-rooms", "websecure", `${host} && PathRegexp(\`^/_matrix/client/[^/]+/publicRooms\`) && !Method(\`OPTIONS\`)`, { middlewares: [REQUIRE_TOKEN], priority: 1000 });
  // Media without a token: Dendrite v0.15.2 serves /_matrix/media/{r0,v1,v3}/download and /thumbnail
  // to anyone and fetches a remote server's file onto the media volume when it is not cached
  // (element-hq/dendrite mediaapi/routing/routing.go download_unauthed, thumbnail_unauthed; download.go
  // doDownload -> getRemoteFile), for every method, OPTIONS included. Everything under /_matrix/media/
  // needs an access token Dendrite accepts, except the two paths Dendrite itself authenticates and
  // whose CORS preflight (sent without a token) must reach it: upload and config (MakeAuthAPI).
  // Clients use the authenticated /_matrix/client/v1/media/* (MSC3916, advertised by Dendrite as
  // org.matrix.msc3916.stable in clientapi/routing/routing.go), which the client router passes on.
  router("media-token", "websecure", `${host} && PathPrefix(\`/_matrix/media/\`) && !PathRegexp(\`^/_matrix/media/(r0|v1|v3)/(upload|config)$\`)`, {
    middlewares: [REQUIRE_TOKEN],
    priority: 1000,
  });
  const wellKnownHosts = [i.matrixHost, ...(i.wellKnownHost && i.wellKnownHost !== i.matrixHost ? [i.wellKnownHost] : [])];
  router("well-known", "websecure", `(${wellKnownHosts.map((h) => `Host(\`${h}\`)`).join(" || ")}) && PathPrefix(\`/.well-known/matrix/\`)`, {
    middlewares: [WELL_KNOWN_CORS],
  });

  // Other servers fetch our media signed, at /_matrix/federation/v1/media/{download,thumbnail}
  // (mediaapi/routing/routing.go, MakeFedHTTPAPI), under the federation prefix. /_matrix/media/ is not
  // routed here: unauthenticated it would fetch remote media for anyone (see media-token above).
  if (i.federation.mode === "open") {
    router("federation", "federation", "PathPrefix(`/_matrix/federation/`) || PathPrefix(`/_matrix/key/`)");
  } else if (i.federation.mode === "allowlist") {
    if (!i.federation.gateAddress) throw new Error("federation allowlist: no federation gate address");
    // Dendrite has no allowlist, and no header regex can be one (Traefik's HeaderRegexp passes when ANY
    // value matches anywhere): the gate reads every Authorization value as the spec and Dendrite do.
    // forwardAuth sends the gate every original header value (traefik/traefik v3.7.9
    // pkg/middlewares/auth/forward.go writeHeader: utils.CopyHeaders, vulcand/oxy v2.1.0
    // utils/netutils.go appends every value) and, with trustForwardHeader=false, drops client-sent
    // X-Forwarded-* before setting its own.
    labels[`traefik.http.middlewares.${FEDERATION_ALLOWLIST}.forwardauth.address`] = i.federation.gateAddress;
    labels[`traefik.http.middlewares.${FEDERATION_ALLOWLIST}.forwardauth.trustForwardHeader`] = "false";
    router("federation", "federation", "PathPrefix(`/_matrix/federation/`) || PathPrefix(`/_matrix/key/`)", { middlewares: [FEDERATION_ALLOWLIST] });
    // Servers fetch our signing keys unauthenticated before they can verify anything of ours.
    router("server-keys", "federation", "Path(`/_matrix/key/v2/server`) || PathPrefix(`/_matrix/key/v2/server/`)", { priority: 1000 });
  }
  return labels;
}
