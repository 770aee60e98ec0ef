/**
 * The test stand-in for Dendrite is github.com/matrix-org/dendrite v0.13.8 (the last Apache-2.0
 * release, from the Go module proxy); the stacks deploy matrixdotorg/dendrite-monolith:v0.15.2
 * (element-hq/dendrite, AGPL: read for facts, never built here). This is every key the rendered
 * dendrite.yaml (any stack) uses that v0.13.8 lacks or treats differently, with the files that show
 * it. test/dendriteCompat.real.test.ts runs v0.13.8's own config loader on every stack's rendered
 * file and requires what it finds to be exactly this list.
 *
 * How the list was drawn (2026-12): setup/config of both versions compared file by file. v0.15.2
 * adds three yaml tags (below, V0152_ONLY_KEYS), removes none and changes no type, Verify or default
 * other than the two network lists. For each key we set, its uses outside setup/config were
 * compared too (the Go field's call sites; the gomatrixserverlib each pins: v0.13.8
 * v0.0.0-20240910190622-2c764912ce93, v0.15.2 v0.0.0-20250815065806-6697d93cbcba): only the
 * network filter differs.
 */

export const STAND_IN = { module: "github.com/matrix-org/dendrite", version: "v0.13.8" } as const;
export const DEPLOYED = { repo: "element-hq/dendrite", ref: "v0.15.2", image: "matrixdotorg/dendrite-monolith:v0.15.2" } as const;

/** A file that shows the difference: for v0.13.8 a path in the module (or, with `module`, in a module it requires); for v0.15.2 a path in element-hq/dendrite at v0.15.2. */
export interface Evidence {
  file: string;
  /** Another module than the Dendrite one (gomatrixserverlib at the version the Dendrite release pins). */
  module?: string;
  shows: string;
}

/** How the checker (test/support/dendriteConfig) sees the difference on v0.13.8. */
export type Observed =
  /** The key is not a yaml tag of v0.13.8's config structs: yaml.v2 drops it silently. */
  | { kind: "unknownKey" }
  /** v0.13.8 parses the key but the loaded config holds another value than the file says. */
  | { kind: "effectiveValue" }
  /** v0.13.8 parses the key alike; what it does with it differs. `fact` is read from the linked code. */
  | { kind: "fact"; fact: string; value: unknown }
  /** v0.13.8 refuses the file (config.Load or Verify): the message, and how the stand-in adapts. */
  | { kind: "refused"; message: RegExp; adaptation: string };

export interface V013Difference {
  /** Path as the checker prints it: dotted, list items [i]. */
  key: string;
  /** What it means for the stand-in. */
  standIn: "ignored" | "different" | "refused";
  observed: Observed;
  v013: Evidence[];
  v0152: Evidence[];
  meaning: string;
}

const GMSL_V013 = "github.com/matrix-org/gomatrixserverlib@v0.0.0-20240910190622-2c764912ce93";

export const DENDRITE_V013_DIFFERENCES: readonly V013Difference[] = [
  {
    key: "federation_api.deny_networks",
    standIn: "ignored",
    observed: { kind: "unknownKey" },
    v013: [
      { file: "setup/config/config_federationapi.go", shows: "type FederationAPI has no deny_networks field (yaml.v2 non-strict: dropped)" },
      { file: "setup/base/base.go", shows: "CreateFederationClient / CreateClient pass no network lists to fclient" },
      { file: "fclient/client.go", module: GMSL_V013, shows: "newDestinationTripper dials with a plain net.Dialer: no CIDR control at all" },
    ],
    v0152: [
      { file: "setup/config/config_federationapi.go", shows: "DenyNetworkCIDRs []string `yaml:\"deny_networks\"`; Defaults: 127.0.0.1/8, 10/8, 172.16/12, 192.168/16, 100.64/10, 169.254/16, ::1/128, fe80::/64, fc00::/7" },
      { file: "setup/base/base.go", shows: "CreateFederationClient: fclient.WithAllowDenyNetworks(AllowNetworkCIDRs, DenyNetworkCIDRs)" },
      { file: "cmd/dendrite/main.go", shows: "fclient.NewDNSCache(size, lifetime, AllowNetworkCIDRs, DenyNetworkCIDRs)" },
    ],
    meaning:
      "The stand-in filters no outbound federation address: it reaches the mesh, VPC, Swarm and metadata ranges the deployed server refuses (SSRF protection is not exercised by it). " +
      "Conversely v0.15.2 refuses to federate with a server whose address is in these ranges (10/8, 172.16/12, 192.168/16 are in the baseline): two test servers on private addresses federate on the stand-in but would not on the deployed image.",
  },
  {
    key: "federation_api.allow_networks",
    standIn: "ignored",
    observed: { kind: "unknownKey" },
    v013: [{ file: "setup/config/config_federationapi.go", shows: "type FederationAPI has no allow_networks field" }],
    v0152: [
      { file: "setup/config/config_federationapi.go", shows: "AllowNetworkCIDRs []string `yaml:\"allow_networks\"`; Defaults: 0.0.0.0/0" },
      { file: "setup/base/base.go", shows: "passed to fclient.WithAllowDenyNetworks with the deny list (deny checked first, then allow, else refused)" },
    ],
    meaning: "The stand-in dials IPv6 federation destinations too; v0.15.2 with allow 0.0.0.0/0 refuses every IPv6 address (not in the allow list).",
  },
  {
    key: "global.dns_cache.enabled",
    standIn: "different",
    observed: { kind: "fact", fact: "dnsCacheFiltersNetworks", value: false },
    v013: [
      { file: "cmd/dendrite/main.go", shows: "fclient.NewDNSCache(cfg.Global.DNSCache.CacheSize, cfg.Global.DNSCache.CacheLifetime)" },
      { file: "fclient/dnscache.go", module: GMSL_V013, shows: "NewDNSCache(size, duration); DialContext uses a bare net.Dialer{}" },
    ],
    v0152: [
      { file: "cmd/dendrite/main.go", shows: "fclient.NewDNSCache(size, lifetime, AllowNetworkCIDRs, DenyNetworkCIDRs): the cache's dialer applies the network lists" },
      { file: "setup/base/base.go", shows: "CreateClient (the plain HTTP client) gets the lists only through WithDNSCache" },
    ],
    meaning:
      "Same parse, same cache. On v0.15.2 enabling it is what puts the network filter on the plain HTTP client (components/render/dendrite.ts relies on that); on the stand-in it only caches lookups.",
  },
];

/** yaml tags element-hq/dendrite v0.15.2 setup/config has and v0.13.8 lacks (config_federationapi.go, config_jetstream.go); none the other way round. */
export const V0152_ONLY_KEYS: readonly string[] = ["federation_api.deny_networks", "federation_api.allow_networks", "global.jetstream.js_domain"];

/** v0.15.2's own deny_networks default (setup/config/config_federationapi.go Defaults): a rendered list replaces it whole (yaml.v2 decodes a sequence into a new slice), so ours must cover it. */
export const V0152_DEFAULT_DENY_NETWORKS: readonly string[] = [
  "127.0.0.1/8",
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "100.64.0.0/10",
  "169.254.0.0/16",
  "::1/128",
  "fe80::/64",
  "fc00::/7",
];
