import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";

/** WireGuard's MTU: overlay packets must fit inside wg0 (FACTS: Swarm over WireGuard). */
export const OVERLAY_MTU = "1420";

/**
 * An overlay network for the services that share it and no one else. `internal` networks have no
 * route out: use them wherever nothing on the network needs the internet.
 *
 * Every docker_network attribute is ForceNew (kreuzwerker/terraform-provider-docker
 * internal/provider/resource_docker_network.go) and the name is fixed (Traefik and the services find
 * "edge" by name), so a changed MTU or `internal` replaces the network under the same name, which
 * Swarm refuses while the old one exists. deleteBeforeReplace: the engine then first deletes every
 * service whose network id would change, then the network, and creates both anew (pulumi/pulumi
 * pkg/resource/deploy/step_generator.go, calculateDependentReplacements): a short outage, on purpose.
 */
export function overlayNetwork(name: string, args: { networkName: string; internal: boolean; subnet?: string }, opts: pulumi.CustomResourceOptions): docker.Network {
  return new docker.Network(
    name,
    {
      name: args.networkName,
      driver: "overlay",
      internal: args.internal,
      attachable: false,
      options: { "com.docker.network.driver.mtu": OVERLAY_MTU },
      // A fixed range only where something trusts addresses in it (the Funnel network).
      ...(args.subnet ? { ipamConfigs: [{ subnet: args.subnet }] } : {}),
    },
    { ...opts, deleteBeforeReplace: true },
  );
}
