import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { hardenedService } from "../hardening";
import { renderFederationGate } from "../render/federationGate";
import { overlayNetwork } from "./network";
import { configMount, swarmConfig } from "./swarmFiles";

// The official node image's user `node` (nodejs/docker-node 24/alpine3.24/Dockerfile: addgroup -g 1000, adduser -u 1000).
export const FEDERATION_GATE_USER = "1000:1000";
export const FEDERATION_GATE_PORT = 8090;
const SERVICE_NAME = "federation-gate";
const PROGRAM_FILE = "/etc/federation-gate/gate.js";
// The same Dockerfile unpacks node with `tar -C /usr/local` and links /usr/local/bin/node; the
// service calls it directly (no entrypoint script), for the program and for its healthcheck.
const NODE = "/usr/local/bin/node";

export interface FederationGateArgs {
  image: pulumi.Input<string>;
  /** Server names whose signed requests may reach Dendrite. */
  allowlist: string[];
  constraints: string[];
}

/**
 * Decides for Traefik's forwardAuth whether an inbound federation request comes from an allowed
 * server, by the origin Dendrite itself will authenticate (components/render/federationGate.server.js).
 * It sits on an internal network shared with Traefik alone and publishes nothing.
 */
export class FederationGate extends pulumi.ComponentResource {
  /** The id of the internal network Traefik must join to reach the gate. */
  readonly networkId: pulumi.Output<string>;
  /** The forwardAuth address (Swarm DNS name on that network). */
  readonly address: string;
  readonly service: docker.Service;

  constructor(name: string, args: FederationGateArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:federation:FederationGate", name, {}, opts);
    const network = overlayNetwork(`${name}-net`, { networkName: "federation-gate", internal: true }, { parent: this });
    const program = swarmConfig(`${name}-program`, "federation-gate", renderFederationGate({ allowedOrigins: args.allowlist, port: FEDERATION_GATE_PORT }), { parent: this });
    this.service = hardenedService(
      `${name}-service`,
      {
        serviceName: SERVICE_NAME,
        image: args.image,
        user: FEDERATION_GATE_USER,
        commands: [NODE, "--max-old-space-size=48", PROGRAM_FILE],
        configs: [configMount(program, PROGRAM_FILE, FEDERATION_GATE_USER)],
        // Measured with node 20 here: 44 MB idle, 66 MB after 5000 requests, and the healthcheck's own
        // node process peaks at 44 MB inside the same limit.
        memoryLimitMb: 192,
        memoryReservationMb: 48,
        cpus: 0.25,
        healthcheck: {
          // The image's own node binary; the gate answers /healthz with 200.
          test: [NODE, "-e", `require("http").get("http://127.0.0.1:${FEDERATION_GATE_PORT}/healthz",(r)=>process.exit(r.statusCode===200?0:1)).on("error",()=>process.exit(1))`],
          intervalSeconds: 30,
          startPeriodSeconds: 10,
        },
        networkIds: [network.id],
        constraints: args.constraints,
        // Stateless: the new task may start before the old one stops.
        replicas: 1,
        updateOrder: "start-first",
      },
      { parent: this },
    );
    this.networkId = network.id;
    this.address = `http://${SERVICE_NAME}:${FEDERATION_GATE_PORT}/verify`;
    this.registerOutputs({ networkId: this.networkId });
  }
}
