import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { hardenedService } from "../hardening";
import { overlayNetwork } from "./network";

export const SOCKET_PROXY_PORT = 2375;

/** The socket proxy's only writable directory (a tmpfs): HAProxy's rendered config and pidfile. */
export const SOCKET_PROXY_RUN_DIR = "/run/haproxy";

/** The image's entrypoint, with the pidfile inside SOCKET_PROXY_RUN_DIR (see the service's tmpfs). */
export const SOCKET_PROXY_START = [
  "set -e",
  `sed "s/@@BIND_PROTO@@/[::]:${SOCKET_PROXY_PORT} v4v6/g" /templates/haproxy.cfg > ${SOCKET_PROXY_RUN_DIR}/haproxy.cfg`,
  `exec /usr/sbin/haproxy -f ${SOCKET_PROXY_RUN_DIR}/haproxy.cfg -W -db -p ${SOCKET_PROXY_RUN_DIR}/haproxy.pid`,
].join("\n");

/**
 * The Docker API sections Traefik's swarm provider calls (FACTS: /version, /services, /networks,
 * /tasks, /nodes/{id}); everything else is off, and POST=0 makes the proxy read-only.
 */
export const SOCKET_PROXY_API: Readonly<Record<string, "0" | "1">> = {
  VERSION: "1",
  SERVICES: "1",
  TASKS: "1",
  NETWORKS: "1",
  NODES: "1",
  PING: "1",
  POST: "0",
  EVENTS: "0",
  INFO: "0",
  CONTAINERS: "0",
  IMAGES: "0",
  VOLUMES: "0",
  SECRETS: "0",
  CONFIGS: "0",
  SWARM: "0",
  SYSTEM: "0",
  EXEC: "0",
  BUILD: "0",
  COMMIT: "0",
  AUTH: "0",
  DISTRIBUTION: "0",
  PLUGINS: "0",
  SESSION: "0",
  GRPC: "0",
  ALLOW_START: "0",
  ALLOW_STOP: "0",
  ALLOW_RESTARTS: "0",
};

export interface SocketProxyArgs {
  image: pulumi.Input<string>;
  /** Group owning /var/run/docker.sock on the managers: the proxy's only privilege. */
  dockerSocketGid: number;
}

/** A read-only Docker API for Traefik: on a manager, on an internal network only Traefik joins, never published. */
export class SocketProxy extends pulumi.ComponentResource {
  /** Id of the internal network Traefik must join to reach the proxy. */
  readonly networkId: pulumi.Output<string>;
  readonly endpoint: pulumi.Output<string>;
  readonly service: docker.Service;

  constructor(name: string, args: SocketProxyArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:edge:SocketProxy", name, {}, opts);
    const network = overlayNetwork(`${name}-net`, { networkName: "docker-api", internal: true }, { parent: this });
    const serviceName = "socket-proxy";
    this.service = hardenedService(
      `${name}-service`,
      {
        serviceName,
        image: args.image,
        // nobody, in the socket's group: can talk to the socket and nothing else.
        user: `65534:${args.dockerSocketGid}`,
        env: { ...SOCKET_PROXY_API, LOG_LEVEL: "info" },
        // HAProxy writes its config and pidfile at start. runc before 1.1.8 (Debian 12's 1.1.5, the
        // droplets' docker.io) gives a tmpfs mounted on a directory the image has that directory's
        // mode, not the one asked for (opencontainers/runc#3911): a tmpfs at /run stays 0755 root
        // and nobody can write neither /run/haproxy nor /run/haproxy.pid. So the tmpfs is at
        // /run/haproxy, which the image lacks (the entrypoint mkdirs it; Alpine's haproxy package
        // makes only /var/lib/haproxy: alpinelinux/aports main/haproxy/APKBUILD), and the pidfile
        // moves into it.
        tmpfs: [{ target: SOCKET_PROXY_RUN_DIR, sizeMb: 8, mode: 0o1777 }],
        // linuxserver/docker-socket-proxy root/docker-entrypoint.sh at 3.4.3-r0-ls91, less its banner,
        // plus `-p`: the template's `pidfile /run/haproxy.pid` (root/templates/haproxy.cfg) then only
        // logs "'pidfile' already specified. Continuing." (a CLI -p wins over the config's). The
        // program sets no DISABLE_IPV6, so the bind is upstream's default.
        commands: ["/bin/sh", "-c", SOCKET_PROXY_START],
        mounts: [{ type: "bind", source: "/var/run/docker.sock", target: "/var/run/docker.sock", readOnly: true }],
        memoryLimitMb: 64,
        memoryReservationMb: 16,
        cpus: 0.25,
        // busybox wget: the image is FROM alpine with busybox 1.37.0 (linuxserver/docker-socket-proxy
        // Dockerfile and package_versions.txt at tag 3.4.3-r0-ls91), and Alpine's busybox has the
        // applet (alpinelinux/aports main/busybox/busyboxconfig: CONFIG_WGET=y). /_ping is allowed with
        // PING=1 (root/templates/haproxy.cfg), on :2375 (root/docker-entrypoint.sh BIND_PROTO).
        healthcheck: { test: ["wget", "-q", "-O", "/dev/null", `http://127.0.0.1:${SOCKET_PROXY_PORT}/_ping`], intervalSeconds: 30, startPeriodSeconds: 10 },
        networkIds: [network.id],
        constraints: ["node.role==manager"],
        updateOrder: "stop-first",
      },
      { parent: this },
    );
    this.networkId = network.id;
    this.endpoint = pulumi.output(`tcp://${serviceName}:${SOCKET_PROXY_PORT}`);
    this.registerOutputs({ networkId: this.networkId, endpoint: this.endpoint });
  }
}
