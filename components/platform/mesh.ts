import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { pairPresharedKey, renderWireguardApplyScript, renderWireguardConfig, wireguardPrivateKey, wireguardPublicKey } from "../render/wireguard";
import { remoteScript } from "./remote";

export interface MeshNode {
  name: string;
  /** Stable per name (settings checked it is unique in the mesh range). */
  meshAddress: string;
  /** The address peers reach this node's WireGuard on (its VPC private address). */
  endpoint: pulumi.Input<string>;
  /** The deployer reaches the node here (its tailnet address). */
  adminAddress: pulumi.Input<string>;
  /** Changes when the machine is replaced: the new one needs its file even if the text is the same. */
  machineId: pulumi.Input<string | number>;
  /** Bumping it rotates this node's key pair (a `keepers` value). */
  keyVersion: number;
  /** The file is written only after this (the node's bootstrap marker exists). */
  ready: pulumi.Resource;
}

export interface WireGuardMeshArgs {
  nodes: MeshNode[];
  listenPort: number;
  /** Bumping it rotates the master secret, so every pair's preshared key. */
  pskVersion: number;
}

/**
 * The WireGuard mesh between the nodes. Resources are O(n): one private key and one apply step
 * per node, and one master secret from which every pair's preshared key is derived (HKDF), so
 * adding a node adds a constant number of resources (each existing node's file gains one peer).
 */
export class WireGuardMesh extends pulumi.ComponentResource {
  /** Deliberately public: a public key is meant to be shared. */
  readonly publicKeys: Record<string, pulumi.Output<string>> = {};
  readonly meshAddresses: Record<string, string> = {};
  /** The wg-quick file each node receives (secret: it holds the private and preshared keys). */
  readonly configs: Record<string, pulumi.Output<string>> = {};
  /** Per node: done once its wg0 is up with the current file. */
  readonly applied: Record<string, command.local.Command> = {};

  constructor(name: string, args: WireGuardMeshArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:platform:WireGuardMesh", name, {}, opts);
    const child = { parent: this };

    const master = new random.RandomBytes(`${name}-psk-master`, { length: 32, keepers: { version: String(args.pskVersion) } }, child);
    const privateKeys: Record<string, pulumi.Output<string>> = {};
    for (const node of args.nodes) {
      const bytes = new random.RandomBytes(`${name}-${node.name}-key`, { length: 32, keepers: { version: String(node.keyVersion) } }, child);
      privateKeys[node.name] = pulumi.secret(bytes.base64.apply((b) => wireguardPrivateKey(Buffer.from(b, "base64"))));
      this.publicKeys[node.name] = pulumi.unsecret(privateKeys[node.name]!.apply(wireguardPublicKey));
      this.meshAddresses[node.name] = node.meshAddress;
    }

    const peerInfo = pulumi.all(
      args.nodes.map((n) => pulumi.all([this.publicKeys[n.name]!, n.endpoint]).apply(([publicKey, endpoint]) => ({ name: n.name, meshAddress: n.meshAddress, publicKey, endpoint }))),
    );
    for (const node of args.nodes) {
      const config = pulumi.secret(
        pulumi.all([privateKeys[node.name]!, master.base64, peerInfo]).apply(([privateKey, masterB64, peers]) =>
          renderWireguardConfig({
            name: node.name,
            privateKey,
            meshAddress: node.meshAddress,
            listenPort: args.listenPort,
            peers: peers
              .filter((p) => p.name !== node.name)
              .map((p) => ({ ...p, presharedKey: pairPresharedKey(Buffer.from(masterB64, "base64"), node.name, p.name) })),
          }),
        ),
      );
      this.configs[node.name] = config;
      this.applied[node.name] = remoteScript(
        `${name}-${node.name}-wg0`,
        { address: node.adminAddress, script: config.apply((c) => renderWireguardApplyScript(c)), triggers: [node.machineId] },
        { ...child, dependsOn: [node.ready] },
      );
    }
    this.registerOutputs({ publicKeys: this.publicKeys, meshAddresses: this.meshAddresses });
  }
}
