import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { hardenedService } from "../hardening";
import { funnelHostname, funnelSubnet, renderServeConfig } from "../render/funnel";
import { overlayNetwork } from "./network";
import { configMount, secretMount, swarmConfig, swarmSecret } from "./swarmFiles";

/**
 * A uid of its own. containerboot needs no root in userspace mode (tailscale/tailscale v1.102.3
 * cmd/containerboot/tailscaled.go: `--tun=userspace-networking`, no /dev/net/tun, no iptables;
 * cmd/tailscaled/tailscaled.go checks the uid only on darwin); its one root-only step, the
 * /var/run/tailscale socket symlink (main.go), only logs a warning when it fails.
 */
export const FUNNEL_USER = "10010:10010";
const SERVICE_NAME = "funnel";
const AUTH_KEY_FILE = "/run/secrets/tailscale-authkey";
const SERVE_CONFIG_FILE = "/etc/tailscale/serve.json";
const STATE_DIR = "/var/lib/tailscale";
const SOCKET = "/tmp/tailscaled.sock";

export interface FunnelArgs {
  image: pulumi.Input<string>;
  /** The device's ts.net name; its first label is the hostname it joins with. */
  fqdn: string;
  /** Single-use, tagged, pre-authorized key (secret); used once, state keeps the identity. */
  authKey: pulumi.Input<string>;
  /** Protected storage for tailscaled's state (node key, certificate). */
  storage: pulumi.Input<Omit<docker.types.input.ServiceTaskSpecContainerSpecMount, "target">>;
  /** Traefik's plain-HTTP funnel entrypoint, as reached on the funnel network, e.g. http://traefik:8081. */
  upstream: string;
  /** The swarm's overlay address pool: the Funnel network takes its last /24 (render/funnel.ts funnelSubnet). */
  addressPool: string;
  constraints: string[];
}

/**
 * The internet's only way in with ingress funnel: tailscaled in userspace networking (no
 * capability, no tun device) joins the tailnet with its own tag, which alone carries the `funnel`
 * node attribute, ends TLS for its ts.net name and proxies to Traefik over an overlay shared with
 * Traefik alone. Tailscale reaches it through connections the container makes outwards, so no
 * port is published or opened.
 */
export class Funnel extends pulumi.ComponentResource {
  /** The network Traefik joins to receive Funnel's requests. */
  readonly networkId: pulumi.Output<string>;
  /** That network's fixed subnet: the only peers Traefik's funnel entrypoint trusts forwarded headers from. */
  readonly subnet: string;
  readonly fqdn: string;
  readonly service: docker.Service;

  constructor(name: string, args: FunnelArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:edge:Funnel", name, {}, opts);
    // Not internal: tailscaled must reach the coordination server and DERP relays.
    this.subnet = funnelSubnet(args.addressPool);
    const network = overlayNetwork(`${name}-net`, { networkName: "funnel", internal: false, subnet: this.subnet }, { parent: this });
    const serve = swarmConfig(`${name}-serve`, "funnel-serve", renderServeConfig({ fqdn: args.fqdn, upstream: args.upstream }), { parent: this });
    const key = swarmSecret(`${name}-authkey`, "funnel-authkey", args.authKey, { parent: this });

    // Variables: tailscale/tailscale v1.102.3 cmd/containerboot/settings.go (configFromEnv) and main.go's
    // doc comment. TS_AUTHKEY is handed to `tailscale up --authkey=`, which reads a `file:` value from
    // that file (cmd/containerboot/tailscaled.go tailscaleUp; cmd/tailscale/cli/up.go auth-key flag).
    const env: Record<string, string> = {
      TS_AUTHKEY: `file:${AUTH_KEY_FILE}`,
      // Log in only when there is no state yet: the key is single-use.
      TS_AUTH_ONCE: "true",
      TS_HOSTNAME: funnelHostname(args.fqdn),
      TS_STATE_DIR: STATE_DIR,
      TS_USERSPACE: "true",
      TS_SERVE_CONFIG: SERVE_CONFIG_FILE,
      TS_SOCKET: SOCKET,
      TS_ACCEPT_DNS: "false",
    };
    this.service = hardenedService(
      `${name}-service`,
      {
        serviceName: SERVICE_NAME,
        image: args.image,
        user: FUNNEL_USER,
        env,
        // The LocalAPI socket and containerboot's scratch files.
        tmpfs: [{ target: "/tmp", sizeMb: 16 }],
        mounts: [pulumi.output(args.storage).apply((m) => ({ ...m, target: STATE_DIR, readOnly: false }))],
        secrets: [secretMount(key, AUTH_KEY_FILE, FUNNEL_USER)],
        configs: [configMount(serve, SERVE_CONFIG_FILE, FUNNEL_USER)],
        memoryLimitMb: 192,
        memoryReservationMb: 48,
        cpus: 0.5,
        // `tailscale status` exits 1 unless the backend is Running or Starting
        // (cmd/tailscale/cli/status.go isRunningOrStarting); the binary is /usr/local/bin/tailscale (build_docker.sh).
        healthcheck: { test: ["/usr/local/bin/tailscale", `--socket=${SOCKET}`, "status"], intervalSeconds: 30, startPeriodSeconds: 60 },
        networkIds: [network.id],
        constraints: args.constraints,
        // One device, one state directory: the old task stops before the new one starts.
        replicas: 1,
        updateOrder: "stop-first",
      },
      { parent: this },
    );
    this.networkId = network.id;
    this.fqdn = args.fqdn;
    this.registerOutputs({ networkId: this.networkId, fqdn: this.fqdn, subnet: this.subnet });
  }
}
