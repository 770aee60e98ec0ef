import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import type { NodeRole } from "../settings";

/** Node labels carrying the roles (edge, db, turn, manager); services are placed by them. */
export const ROLE_LABEL_PREFIX = "hardened-matrix.role.";

/** Placement constraint for services that must run on the node carrying `role`. */
export function roleConstraint(role: string): string {
  return `node.labels.${ROLE_LABEL_PREFIX}${role}==true`;
}

/** What persistent data a stateful service keeps; each gets its own protected storage. */
export type StoragePurpose = "postgres" | "dendrite" | "acme" | "headscale" | "funnel";

/**
 * The layer under the services: the local engine, or cloud nodes. Every stack runs the same
 * service components on whatever platform gives them.
 */
export interface Platform {
  /** Docker provider talking to a Swarm manager. */
  provider: pulumi.ProviderResource;
  /**
   * Persistent, protected storage for `purpose`, owned by `owner` ("uid:gid") and placed on the
   * node carrying `role`. Returns the mount (without its target) for the service.
   */
  storage(purpose: StoragePurpose, role: NodeRole, owner: string): pulumi.Input<Omit<docker.types.input.ServiceTaskSpecContainerSpecMount, "target">>;
  /** Memory of the node carrying `role`, for sizing the services placed there. */
  nodeMemoryMb(role: NodeRole): number;
  /** Public address the TURN node advertises. */
  turnExternalIp: pulumi.Input<string>;
  /** Private ranges of this deployment (VPC, mesh, overlays) that TURN must never relay to. */
  privateRanges: string[];
  /** Stack outputs the platform adds (addresses, cost...). */
  outputs: Record<string, pulumi.Input<unknown>>;
}
