import type { DendriteRoutesInput } from "../../components/render/dendriteRoutes";
/**
 * Dendrite v0.15.2's public routes under /_matrix/media/, /_matrix/client/v1/media/,
 * /_matrix/federation/ and /_matrix/key/, as element-hq/dendrite registers them (tag v0.15.2):
 * - mediaapi/routing/routing.go Setup: routers.Media PathPrefix("/{apiversion:(?:r0|v1|v3)}/"),
 *   routers.Client PathPrefix("/v1/media/"), routers.Federation PathPrefix("/v1/media/");
 * - federationapi/routing/routing.go Setup: routers.Keys "/v2", routers.Federation "/v1", "/v2", "/v3".
 * `auth` is what the handler itself demands: "token" (httputil.MakeAuthAPI, or MakeHTTPAPI with
 * WithAuth: a Matrix access token), "signed" (MakeFedAPI / MakeFedHTTPAPI: an X-Matrix request
 * signature it verifies), "none" (MakeExternalAPI or a bare handler: anyone). `remoteFetch`: the
 * handler downloads a remote server's file onto the media volume when it is not cached
 * (mediaapi/routing/download.go doDownload -> getRemoteFile), for any {serverName} not our own.
 * `methods`: as registered (.Methods(...)); the bare download handlers ignore the method, so OPTIONS
 * downloads too (routing.go makeDownloadAPI).
 */
export interface DendriteRoute {
  methods: string[];
  /** Gorilla template; {apiversion} stands for r0, v1 and v3. */
  template: string;
  auth: "none" | "token" | "signed";
  remoteFetch?: true;
  /** Where it is registered, for the reader. */
  handler: string;
}

const MEDIA = "mediaapi/routing/routing.go";
const FED = "federationapi/routing/routing.go";
const GET = ["GET"];
const GET_OPTIONS = ["GET", "OPTIONS"];

export const DENDRITE_ROUTES: DendriteRoute[] = [
  { methods: ["POST", "OPTIONS"], template: "/_matrix/media/{apiversion}/upload", auth: "token", handler: `${MEDIA} uploadHandler` },
  { methods: GET_OPTIONS, template: "/_matrix/media/{apiversion}/config", auth: "token", handler: `${MEDIA} configHandler` },
  { methods: GET_OPTIONS, template: "/_matrix/media/{apiversion}/download/{serverName}/{mediaId}", auth: "none", remoteFetch: true, handler: `${MEDIA} download_unauthed` },
  { methods: GET_OPTIONS, template: "/_matrix/media/{apiversion}/download/{serverName}/{mediaId}/{downloadName}", auth: "none", remoteFetch: true, handler: `${MEDIA} download_unauthed` },
  { methods: GET_OPTIONS, template: "/_matrix/media/{apiversion}/thumbnail/{serverName}/{mediaId}", auth: "none", remoteFetch: true, handler: `${MEDIA} thumbnail_unauthed` },
  { methods: GET_OPTIONS, template: "/_matrix/client/v1/media/config", auth: "token", handler: `${MEDIA} configHandler` },
  { methods: GET_OPTIONS, template: "/_matrix/client/v1/media/download/{serverName}/{mediaId}", auth: "token", remoteFetch: true, handler: `${MEDIA} download_authed_client` },
  { methods: GET_OPTIONS, template: "/_matrix/client/v1/media/download/{serverName}/{mediaId}/{downloadName}", auth: "token", remoteFetch: true, handler: `${MEDIA} download_authed_client` },
  { methods: GET_OPTIONS, template: "/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", auth: "token", remoteFetch: true, handler: `${MEDIA} thumbnail_authed_client` },
  // forFederation: the origin is our own server name, so these never fetch (download.go Download).
  { methods: GET_OPTIONS, template: "/_matrix/federation/v1/media/download/{mediaId}", auth: "signed", handler: `${MEDIA} download_authed_federation` },
  { methods: GET_OPTIONS, template: "/_matrix/federation/v1/media/thumbnail/{mediaId}", auth: "signed", handler: `${MEDIA} thumbnail_authed_federation` },

  { methods: GET, template: "/_matrix/key/v2/server", auth: "none", handler: `${FED} localKeys` },
  { methods: GET, template: "/_matrix/key/v2/server/", auth: "none", handler: `${FED} localKeys` },
  { methods: GET, template: "/_matrix/key/v2/server/{keyID}", auth: "none", handler: `${FED} localKeys` },
  { methods: ["POST"], template: "/_matrix/key/v2/query", auth: "none", handler: `${FED} notaryKeys` },
  { methods: GET, template: "/_matrix/key/v2/query/{serverName}/{keyID}", auth: "none", handler: `${FED} notaryKeys` },

  { methods: ["PUT", "OPTIONS"], template: "/_matrix/federation/v1/send/{txnID}", auth: "signed", handler: `${FED} federation_send` },
  { methods: ["PUT", "OPTIONS"], template: "/_matrix/federation/v1/invite/{roomID}/{eventID}", auth: "signed", handler: `${FED} federation_invite` },
  { methods: ["PUT", "OPTIONS"], template: "/_matrix/federation/v2/invite/{roomID}/{eventID}", auth: "signed", handler: `${FED} federation_invite` },
  { methods: ["PUT", "OPTIONS"], template: "/_matrix/federation/v3/invite/{roomID}/{userID}", auth: "signed", handler: `${FED} federation_invite` },
  { methods: ["POST", "OPTIONS"], template: "/_matrix/federation/v1/3pid/onbind", auth: "none", handler: `${FED} 3pid_onbind` },
  { methods: ["PUT", "OPTIONS"], template: "/_matrix/federation/v1/exchange_third_party_invite/{roomID}", auth: "signed", handler: `${FED} exchange_third_party_invite` },
  { methods: GET, template: "/_matrix/federation/v1/event/{eventID}", auth: "signed", handler: `${FED} federation_get_event` },
  { methods: GET, template: "/_matrix/federation/v1/state/{roomID}", auth: "signed", handler: `${FED} federation_get_state` },
  { methods: GET, template: "/_matrix/federation/v1/state_ids/{roomID}", auth: "signed", handler: `${FED} federation_get_state_ids` },
  { methods: GET, template: "/_matrix/federation/v1/event_auth/{roomID}/{eventID}", auth: "signed", handler: `${FED} federation_get_event_auth` },
  { methods: GET, template: "/_matrix/federation/v1/query/directory", auth: "signed", handler: `${FED} federation_query_room_alias` },
  { methods: GET, template: "/_matrix/federation/v1/query/profile", auth: "signed", handler: `${FED} federation_query_profile` },
  { methods: GET, template: "/_matrix/federation/v1/user/devices/{userID}", auth: "signed", handler: `${FED} federation_user_devices` },
  { methods: ["PUT", "DELETE"], template: "/_matrix/federation/v1/peek/{roomID}/{peekID}", auth: "signed", handler: `${FED} federation_peek (MSC2444 only)` },
  { methods: GET, template: "/_matrix/federation/v1/make_join/{roomID}/{userID}", auth: "signed", handler: `${FED} federation_make_join` },
  { methods: ["PUT"], template: "/_matrix/federation/v1/send_join/{roomID}/{eventID}", auth: "signed", handler: `${FED} federation_send_join` },
  { methods: ["PUT"], template: "/_matrix/federation/v2/send_join/{roomID}/{eventID}", auth: "signed", handler: `${FED} federation_send_join` },
  { methods: GET, template: "/_matrix/federation/v1/make_leave/{roomID}/{userID}", auth: "signed", handler: `${FED} federation_make_leave` },
  { methods: ["PUT"], template: "/_matrix/federation/v1/send_leave/{roomID}/{eventID}", auth: "signed", handler: `${FED} federation_send_leave` },
  { methods: ["PUT"], template: "/_matrix/federation/v2/send_leave/{roomID}/{eventID}", auth: "signed", handler: `${FED} federation_send_leave` },
  { methods: GET, template: "/_matrix/federation/v1/version", auth: "none", handler: `${FED} federation_version` },
  { methods: ["POST"], template: "/_matrix/federation/v1/get_missing_events/{roomID}", auth: "signed", handler: `${FED} federation_get_missing_events` },
  { methods: GET, template: "/_matrix/federation/v1/backfill/{roomID}", auth: "signed", handler: `${FED} federation_backfill` },
  { methods: ["GET", "POST"], template: "/_matrix/federation/v1/publicRooms", auth: "none", handler: `${FED} federation_public_rooms` },
  { methods: ["POST"], template: "/_matrix/federation/v1/user/keys/claim", auth: "signed", handler: `${FED} federation_keys_claim` },
  { methods: ["POST"], template: "/_matrix/federation/v1/user/keys/query", auth: "signed", handler: `${FED} federation_keys_query` },
  { methods: GET, template: "/_matrix/federation/v1/openid/userinfo", auth: "none", handler: `${FED} federation_openid_userinfo` },
  { methods: GET, template: "/_matrix/federation/v1/hierarchy/{roomID}", auth: "signed", handler: `${FED} federation_room_hierarchy` },
];

/** Concrete request paths for a route: every API version, and `serverName` where the template names one. */
export function samplePaths(route: DendriteRoute, serverName: string): string[] {
  const fill = (t: string) =>
    t
      .replace("{serverName}", serverName)
      .replace("{mediaId}", "aBcD1234")
      .replace("{downloadName}", "cat.png")
      .replace(/\{(txnID|roomID|eventID|userID|keyID|peekID)\}/g, (_, v: string) => encodeURIComponent(`${v === "roomID" ? "!r" : v === "eventID" ? "$e" : v === "userID" ? "@u" : ""}${v}:x.org`));
  const versions = route.template.includes("{apiversion}") ? ["r0", "v1", "v3"] : [""];
  return versions.map((v) => fill(route.template.replace("{apiversion}", v)));
}

/** The routers' input the route tests start from (a server name delegating to its Matrix host). */
export const SAMPLE_ROUTES: DendriteRoutesInput = {
  service: "dendrite",
  port: 8008,
  edgeNetwork: "edge",
  matrixHost: "matrix.example.org",
  wellKnownHost: "example.org",
  federation: { mode: "open" },
  certResolver: "le",
};

const GATE = "http://federation-gate:8090/verify";
const FUNNEL = { matrixHost: "matrix.tail0example.ts.net", wellKnownHost: undefined, funnelEntryPoint: "funnel" };
/** Every federation mode and ingress the routers render differently. */
export const ROUTE_VARIANTS: [string, DendriteRoutesInput][] = [
  ["open", SAMPLE_ROUTES],
  ["allowlist", { ...SAMPLE_ROUTES, federation: { mode: "allowlist", gateAddress: GATE } }],
  ["closed", { ...SAMPLE_ROUTES, federation: { mode: "closed" } }],
  ["SRV delegation", { ...SAMPLE_ROUTES, wellKnownHost: undefined, federationCertDomain: "example.org" }],
  ["funnel, open", { ...SAMPLE_ROUTES, ...FUNNEL }],
  ["funnel, allowlist", { ...SAMPLE_ROUTES, ...FUNNEL, federation: { mode: "allowlist", gateAddress: GATE } }],
];
