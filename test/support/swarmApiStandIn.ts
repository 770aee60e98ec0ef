import * as http from "node:http";
import type { PlannedResource } from "../../plan/plan";

/**
 * The Docker Engine API calls Traefik's Swarm provider makes (traefik/traefik v3.7.13
 * pkg/provider/docker/pswarm.go: ping, version, networks, services, tasks), answered from the offline
 * plan: one running task per planned service, so Traefik's routers, middlewares and services come from
 * the rendered labels exactly. Shared by every test that runs the real Traefik on the plan.
 */

export interface PlanService {
  id: string;
  name: string;
  /** The service's labels as rendered (callers adapt addresses in them and list what they changed). */
  labels: Record<string, string>;
  /** Ids of the plan's networks the task joins. */
  networks: string[];
}

export interface PlanSwarm {
  services: PlanService[];
  /** Network id -> name. */
  networks: Map<string, string>;
}

type Resource = { type: string; id: string; inputs: Record<string, unknown> };

/** The plan's Swarm networks and services, as the engine would list them. */
export function planSwarm(resources: PlannedResource[]): PlanSwarm {
  const rs = resources as unknown as Resource[];
  const networks = new Map(rs.filter((r) => r.type === "docker:index/network:Network").map((r) => [r.id, r.inputs.name as string]));
  const services = rs
    .filter((r) => r.type === "docker:index/service:Service")
    .map((r) => {
      const task = (r.inputs.taskSpec ?? {}) as { networksAdvanceds?: { id?: string }[] };
      return {
        id: r.id,
        name: r.inputs.name as string,
        labels: Object.fromEntries(((r.inputs.labels ?? []) as { label: string; value: string }[]).map((l) => [l.label, l.value])),
        networks: (task.networksAdvanceds ?? []).map((n) => n.id).filter((n): n is string => n !== undefined && networks.has(n)),
      };
    });
  return { services, networks };
}

export interface SwarmApiOptions {
  /** The task's address of a service on a network (without prefix length). */
  addr: (service: PlanService, networkId: string) => string;
  /** Called with "METHOD /path" for every request (tests assert the provider really listed). */
  onCall?: (call: string) => void;
}

/** An HTTP server answering the Swarm provider's calls; listen on TCP or on a unix socket. */
export function swarmApiStandIn({ services, networks }: PlanSwarm, opts: SwarmApiOptions): http.Server {
  const json = (res: http.ServerResponse, body: unknown) => {
    res.writeHead(200, { "Content-Type": "application/json", "Api-Version": "1.47" });
    res.end(JSON.stringify(body));
  };
  return http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://docker");
    const p = url.pathname.replace(/^\/v[0-9.]+/, "");
    opts.onCall?.(`${req.method} ${p}`);
    if (p === "/_ping") {
      res.writeHead(200, { "Api-Version": "1.47", "Content-Type": "text/plain" });
      return res.end(req.method === "HEAD" ? undefined : "OK");
    }
    if (p === "/version") return json(res, { Version: "27.5.1", ApiVersion: "1.47", MinAPIVersion: "1.24", Os: "linux", Arch: "amd64" });
    if (p === "/networks") return json(res, [...networks].map(([id, name]) => ({ Id: id, Name: name, Scope: "swarm", Driver: "overlay" })));
    if (p === "/services") {
      return json(
        res,
        services.map((s) => ({ ID: s.id, Version: { Index: 1 }, Spec: { Name: s.name, Labels: s.labels, Mode: { Replicated: { Replicas: 1 } }, EndpointSpec: { Mode: "vip" } }, Endpoint: { Spec: { Mode: "vip" } } })),
      );
    }
    if (p === "/tasks") {
      const filters = JSON.parse(url.searchParams.get("filters") ?? "{}") as Record<string, Record<string, boolean>>;
      const ids = Object.keys(filters.service ?? {});
      return json(
        res,
        services
          .filter((s) => ids.length === 0 || ids.includes(s.id))
          .map((s) => ({
            ID: `task-${s.id}`,
            ServiceID: s.id,
            Slot: 1,
            DesiredState: "running",
            Status: { State: "running" },
            NetworksAttachments: s.networks.map((n) => {
              const a = opts.addr(s, n);
              return { Network: { ID: n, Spec: { Name: networks.get(n) } }, Addresses: [`${a}/${a.includes(":") ? 64 : 8}`] };
            }),
          })),
      );
    }
    res.writeHead(404, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ message: `not served by the test: ${req.method} ${p}` }));
  });
}
