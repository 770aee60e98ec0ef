import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { hardenedService } from "../hardening";
import { overlayNetwork } from "./network";
import {
  ACME_STORAGE_DIR,
  renderTraefikDynamic,
  renderTraefikStatic,
  TRAEFIK_DYNAMIC_PATH,
  TRAEFIK_PORTS,
  TRAEFIK_STATIC_PATH,
  type ACME_SERVERS,
} from "../render/traefik";
import { configMount, secretMount, swarmConfig, swarmSecret } from "./swarmFiles";

export const TRAEFIK_USER = "10001:10001";
const DASHBOARD_USERS_FILE = "/run/secrets/dashboard-users";
const DNS_TOKEN_FILE = "/run/secrets/cf-dns-api-token";

export interface PublishedPorts {
  http: number;
  https: number;
  federation: number;
  admin: number;
}

export interface TraefikArgs {
  image: pulumi.Input<string>;
  socketProxyEndpoint: pulumi.Input<string>;
  socketProxyNetworkId: pulumi.Input<string>;
  /** Ids of internal networks of services only Traefik calls (e.g. the federation gate). */
  extraNetworkIds?: pulumi.Input<string>[];
  ports: PublishedPorts;
  /** Largest media upload (MiB): the client entrypoint's read timeout is derived from it. */
  maxUploadMb: number;
  /** Where ACME state lives (a protected volume or a bind on the edge node's data volume). */
  acme?: {
    ca: keyof typeof ACME_SERVERS;
    email: string;
    dnsToken?: pulumi.Input<string>;
    storage: pulumi.Input<Omit<docker.types.input.ServiceTaskSpecContainerSpecMount, "target">>;
  };
  /** Dashboard on the admin entrypoint, only from these source ranges (the VPN), behind basic auth. */
  dashboard?: { allowedSourceRanges: string[] };
  /**
   * Ingress funnel: requests arrive only from the Funnel container on this network (its id), at the
   * plain-HTTP funnel entrypoint; the public ports are not published.
   */
  funnel?: { networkId: pulumi.Input<string>; subnet: string };
  /** Placement: the node carrying the edge role. */
  constraints: string[];
}

/**
 * Traefik at the edge: the only published service. Sees Docker only through the socket proxy,
 * serves TLS with the file-provider options, redirects HTTP, keeps ACME state on one persistent
 * replica, and keeps its dashboard off every public entrypoint.
 */
export class Traefik extends pulumi.ComponentResource {
  /** The overlay network routed services join so Traefik can reach them. */
  readonly edgeNetworkId: pulumi.Output<string>;
  readonly dashboardPassword?: pulumi.Output<string>;
  readonly service: docker.Service;

  constructor(name: string, args: TraefikArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:edge:Traefik", name, {}, opts);
    const edge = overlayNetwork(`${name}-edge-net`, { networkName: "edge", internal: false }, { parent: this });

    const staticConfig = swarmConfig(
      `${name}-static`,
      "traefik-static",
      pulumi.all([args.socketProxyEndpoint, edge.name]).apply(([endpoint, edgeNetwork]) =>
        renderTraefikStatic({
          publishedHttpsPort: args.ports.https,
          socketProxyEndpoint: endpoint,
          edgeNetwork,
          maxUploadMb: args.maxUploadMb,
          dashboard: args.dashboard !== undefined,
          funnel: args.funnel && { trustedIPs: [args.funnel.subnet] },
          acme: args.acme && { ca: args.acme.ca, email: args.acme.email, dnsTokenFile: args.acme.dnsToken ? DNS_TOKEN_FILE : undefined },
        }),
      ),
      { parent: this },
    );
    const dynamicConfig = swarmConfig(
      `${name}-dynamic`,
      "traefik-dynamic",
      renderTraefikDynamic({
        // Without ACME Traefik only has its self-signed default certificate, which strict SNI would refuse.
        sniStrict: args.acme !== undefined,
        dashboard: args.dashboard && { usersFile: DASHBOARD_USERS_FILE, allowedSourceRanges: args.dashboard.allowedSourceRanges },
      }),
      { parent: this },
    );

    const secrets: pulumi.Input<docker.types.input.ServiceTaskSpecContainerSpecSecret>[] = [];
    if (args.dashboard) {
      const password = new random.RandomPassword(`${name}-dashboard-password`, { length: 32, special: false }, { parent: this });
      const users = swarmSecret(`${name}-dashboard-users`, "traefik-dashboard-users", pulumi.interpolate`admin:${password.bcryptHash}\n`, { parent: this });
      secrets.push(secretMount(users, DASHBOARD_USERS_FILE, TRAEFIK_USER));
      this.dashboardPassword = password.result;
    }
    const env: Record<string, pulumi.Input<string>> = {};
    if (args.acme?.dnsToken) {
      const token = swarmSecret(`${name}-cf-dns-token`, "traefik-cf-dns-token", args.acme.dnsToken, { parent: this });
      secrets.push(secretMount(token, DNS_TOKEN_FILE, TRAEFIK_USER));
      env.CF_DNS_API_TOKEN_FILE = DNS_TOKEN_FILE;
    }

    // Host mode keeps the client's address (the ingress mesh would replace it) and binds only the edge node.
    const publish = (targetPort: number, publishedPort: number, name: string): docker.types.input.ServiceEndpointSpecPort => ({
      name,
      targetPort,
      publishedPort,
      protocol: "tcp",
      publishMode: "host",
    });
    const ports = [
      ...(args.funnel
        ? []
        : [
            publish(TRAEFIK_PORTS.web, args.ports.http, "web"),
            publish(TRAEFIK_PORTS.websecure, args.ports.https, "websecure"),
            publish(TRAEFIK_PORTS.federation, args.ports.federation, "federation"),
          ]),
      ...(args.dashboard ? [publish(TRAEFIK_PORTS.admin, args.ports.admin, "admin")] : []),
    ];

    this.service = hardenedService(
      `${name}-service`,
      {
        serviceName: "traefik",
        image: args.image,
        user: TRAEFIK_USER,
        commands: ["traefik", `--configFile=${TRAEFIK_STATIC_PATH}`],
        env,
        tmpfs: [{ target: "/tmp", sizeMb: 16, mode: 0o1777 }],
        mounts: args.acme ? [pulumi.output(args.acme.storage).apply((m) => ({ ...m, target: ACME_STORAGE_DIR, readOnly: false }))] : [],
        configs: [configMount(staticConfig, TRAEFIK_STATIC_PATH, TRAEFIK_USER), configMount(dynamicConfig, TRAEFIK_DYNAMIC_PATH, TRAEFIK_USER)],
        secrets,
        memoryLimitMb: 256,
        memoryReservationMb: 64,
        cpus: 1,
        // The plain tags are the alpine variant (docker-library/official-images library/traefik:
        // `Directory: alpine`; the stored copy is of v2.9), whose traefik/traefik-library-image
        // v3.7/alpine/Dockerfile puts the binary in /usr/local/bin, on PATH (the scratch variant's
        // /traefik is not). Needs the ping entry point, which the static config enables (render/traefik.ts).
        healthcheck: { test: ["traefik", "healthcheck", "--ping", `--configFile=${TRAEFIK_STATIC_PATH}`], intervalSeconds: 15, startPeriodSeconds: 20 },
        networkIds: [edge.id, args.socketProxyNetworkId, ...(args.extraNetworkIds ?? []), ...(args.funnel ? [args.funnel.networkId] : [])],
        constraints: args.constraints,
        ports,
        // ACME storage supports one instance (FACTS): exactly one replica, stopped before its successor starts.
        replicas: 1,
        updateOrder: "stop-first",
      },
      { parent: this },
    );
    this.edgeNetworkId = edge.id;
    this.registerOutputs({ edgeNetworkId: this.edgeNetworkId, dashboardPassword: this.dashboardPassword });
  }
}
