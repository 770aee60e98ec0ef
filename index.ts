import * as pulumi from "@pulumi/pulumi";
import { LocalSwarm, roleConstraint } from "./components/localSwarm";
import type { Platform } from "./components/platform";
import { loadSettings, type Settings } from "./components/settings";
import { SocketProxy } from "./components/socketProxy";
import { Traefik, TRAEFIK_USER } from "./components/traefik";

// Tailscale and Headscale hand out addresses from CGNAT space (and this ULA prefix for IPv6).
const VPN_SOURCE_RANGES = ["100.64.0.0/10", "fd7a:115c:a1e0::/48"];

function localPlatform(settings: Settings): Platform {
  return new LocalSwarm("local", {
    addressPool: settings.swarmAddressPool,
    memoryMb: settings.nodeMemoryMb,
    turnExternalIp: settings.turnExternalIp || "127.0.0.1",
    toolImage: settings.images.postgres,
  });
}

async function main(): Promise<Record<string, unknown>> {
  const settings = loadSettings();
  if (settings.target !== "local") {
    throw new pulumi.RunError(`hardened-matrix:target: "${settings.target}" is not available in this version; allowed: local`);
  }
  const platform = localPlatform(settings);
  const onSwarm: pulumi.ComponentResourceOptions = { providers: [platform.provider] };

  const socketProxy = new SocketProxy("socket-proxy", { image: settings.images.socketProxy, dockerSocketGid: settings.dockerSocketGid }, onSwarm);
  const traefik = new Traefik(
    "traefik",
    {
      image: settings.images.traefik,
      socketProxyEndpoint: socketProxy.endpoint,
      socketProxyNetwork: socketProxy.networkName,
      ports: { http: settings.httpPort, https: settings.httpsPort, federation: settings.federationPort, admin: settings.adminPort },
      acme:
        settings.acmeCa === "none"
          ? undefined
          : {
              ca: settings.acmeCa,
              email: settings.acmeEmail,
              dnsToken: settings.acmeDnsToken ? pulumi.secret(settings.acmeDnsToken) : undefined,
              storage: platform.storage("acme", "edge", TRAEFIK_USER),
            },
      dashboard: settings.dashboard ? { allowedSourceRanges: VPN_SOURCE_RANGES } : undefined,
      constraints: [roleConstraint("edge")],
    },
    onSwarm,
  );

  const httpsSuffix = settings.httpsPort === 443 ? "" : `:${settings.httpsPort}`;
  return {
    target: settings.target,
    serverName: settings.serverName,
    matrixUrl: `https://${settings.matrixFqdn}${httpsSuffix}`,
    ...platform.outputs,
    ...(traefik.dashboardPassword ? { traefikDashboardPassword: traefik.dashboardPassword } : {}),
  };
}

export = main;
