import { DROPLET_SIZES, type Settings } from "../components/settings";
import { SPACES_SUBSCRIPTION_PRICE, VOLUME_PRICE_PER_GIB, RESERVED_IP_ASSIGNED_PRICE } from "../components/platform/cloud";
import type { Plan, PlannedResource } from "./plan";

/**
 * What a person wants to know after `npm run plan`: where users connect, what the internet can
 * reach, how admins get in, what it costs, what to fix first, and what to run next. Everything is
 * read from the plan itself (its resources and outputs) and the stack's settings, so it describes
 * exactly what would be deployed.
 */
export interface Summary {
  stack: string;
  target: Settings["target"];
  endpoints: { clientUrl: string; serverName: string; federation: string; turn: string[] };
  /** Per machine (a droplet, or this machine for the local target): ports anyone on the internet can reach. */
  openToInternet: Array<{ node: string; ports: string[] }>;
  adminAccess: string[];
  /** Droplets, volumes, reserved IPs and Spaces at the dated list prices (live prices at `pulumi up`). */
  monthlyCostUsd?: { total: number; parts: Array<{ item: string; usd: number }> };
  clients: string;
  warnings: string[];
  next: string[];
}

const ANYWHERE = ["0.0.0.0/0", "::/0"];

type Inputs = Record<string, unknown>;
const inputs = (r: PlannedResource): Inputs => (r.inputs ?? {}) as Inputs;
const ofType = (plan: Plan, type: string) => plan.resources.filter((r) => r.type === type);

function cloudPorts(plan: Plan): Summary["openToInternet"] {
  const firewalls = ofType(plan, "digitalocean:index/firewall:Firewall").map((f) => {
    const i = inputs(f);
    const rules = (i.inboundRules as Array<{ protocol: string; portRange?: string; sourceAddresses?: string[] }> | undefined) ?? [];
    const open = rules.filter((r) => (r.sourceAddresses ?? []).some((a) => ANYWHERE.includes(a)) && r.protocol !== "icmp");
    return { tags: (i.tags as string[] | undefined) ?? [], dropletIds: (i.dropletIds as unknown[] | undefined) ?? [], name: String(i.name ?? f.name), open };
  });
  return ofType(plan, "digitalocean:index/droplet:Droplet").map((d) => {
    const i = inputs(d);
    const tags = (i.tags as string[] | undefined) ?? [];
    const ports = firewalls
      .filter((f) => f.tags.some((t) => tags.includes(t)) || f.dropletIds.includes(d.id))
      .flatMap((f) => f.open.map((r) => `${r.portRange ?? "all"}/${r.protocol}`));
    return { node: String(i.name ?? d.name), ports: [...new Set(ports)] };
  });
}

function localPorts(plan: Plan, s: Settings): Summary["openToInternet"] {
  const ports: string[] = [];
  for (const svc of ofType(plan, "docker:index/service:Service")) {
    const spec = inputs(svc).endpointSpec as { ports?: Array<{ publishedPort?: number; protocol?: string }> } | undefined;
    for (const p of spec?.ports ?? []) ports.push(`${p.publishedPort}/${p.protocol ?? "tcp"}`);
  }
  // coTURN shares the host's network (components/services/coturn.ts): its ports are the host's.
  if (s.turnEnabled) ports.push(`${s.turnPort}/udp`, `${s.turnPort}/tcp`, `${s.turnMinPort}-${s.turnMaxPort}/udp`);
  return [{ node: "this machine (every interface, unless a host firewall says otherwise)", ports }];
}

function federation(s: Settings): string {
  if (s.federationMode === "closed") return "off (federationMode closed): users talk only to users of this server";
  const target = `${s.matrixFqdn}:${s.federationPort}`;
  const how =
    s.delegation === "srv"
      ? `_matrix-fed._tcp.${s.serverName} (SRV) -> ${target}`
      : s.delegation === "well-known" && s.serverName !== s.matrixFqdn
        ? `https://${s.serverName}/.well-known/matrix/server -> ${target}`
        : target;
  return s.federationMode === "allowlist" ? `${how}, inbound only from ${s.federationAllowlist.join(", ")}` : `${how}, open to every server`;
}

function adminAccess(s: Settings, outputs: Record<string, unknown>): string[] {
  if (s.target === "local") return ["the local Docker engine (`docker service ls`); no VPN, no SSH"];
  const lines: string[] = [];
  if (s.vpn === "tailscale") lines.push(`Tailscale SSH as root over the tailnet, for ${s.admins.join(", ")}; port 22 is open to no one on the internet`);
  if (s.vpn === "headscale") {
    lines.push(`your own Headscale at ${String(outputs.headscaleUrl ?? `https://${s.headscaleFqdn}`)}; admins join with the stack output headscaleAdminAuthKey (one hour, single use), then SSH as root over it`);
  }
  if (s.dashboard) lines.push(`Traefik's dashboard on the edge node's VPN address, port ${s.adminPort} (user admin, password in the stack output traefikDashboardPassword)`);
  return lines;
}

function cost(plan: Plan): Summary["monthlyCostUsd"] {
  const parts: Array<{ item: string; usd: number }> = [];
  for (const d of ofType(plan, "digitalocean:index/droplet:Droplet")) {
    const size = String(inputs(d).size);
    const price = DROPLET_SIZES[size as keyof typeof DROPLET_SIZES]?.priceMonthly;
    if (price !== undefined) parts.push({ item: `droplet ${String(inputs(d).name ?? d.name)} (${size})`, usd: price });
  }
  for (const v of ofType(plan, "digitalocean:index/volume:Volume")) {
    const gib = Number(inputs(v).size);
    parts.push({ item: `volume ${String(inputs(v).name ?? v.name)} (${gib} GiB)`, usd: Math.round(gib * VOLUME_PRICE_PER_GIB * 100) / 100 });
  }
  for (const ip of ofType(plan, "digitalocean:index/reservedIp:ReservedIp")) parts.push({ item: `reserved IP ${ip.name} (free while assigned)`, usd: RESERVED_IP_ASSIGNED_PRICE });
  if (ofType(plan, "digitalocean:index/spacesBucket:SpacesBucket").length > 0) parts.push({ item: "Spaces subscription (backups; per account)", usd: SPACES_SUBSCRIPTION_PRICE });
  if (parts.length === 0) return undefined;
  return { total: Math.round(parts.reduce((sum, p) => sum + p.usd, 0) * 100) / 100, parts };
}

function warnings(plan: Plan, s: Settings, credentials: string[]): string[] {
  const w: string[] = [];
  if (s.acmeCa === "letsencrypt-staging") {
    w.push("acmeCa is letsencrypt-staging: its certificates are trusted by no client and no other server; use it to try a deploy, then set acmeCa to letsencrypt");
  }
  // Traefik generates its default certificate anew at every dynamic configuration change (traefik v3.7.13 pkg/tls/tlsmanager.go UpdateConfigs).
  if (s.target === "local") w.push(`self-signed certificate (acmeCa none): a client must be told to accept it (open ${String(plan.outputs.matrixUrl)} in the browser), and again after a service changes: Traefik makes a new one then`);
  if (credentials.length > 0) w.push(`pulumi up needs credentials the stack does not hold yet: ${credentials.map((c) => c.slice(0, c.indexOf(": "))).join(", ")} (npm run plan:check -- --stack ${s.stack} says how to set each)`);
  if (!s.backupPlan) w.push("backups are off: a lost disk loses every message and file (set backupRepository, README \"Backups\")");
  if (!s.turnEnabled) w.push("TURN is off: voice and video calls fail between users behind NAT");
  if (s.ingress === "funnel" && s.turnEnabled && !s.funnelTurnPorts) w.push("ingress funnel: TURN cannot go through Funnel and funnelTurnPorts is false, so calls need the users' own TURN");
  return w;
}

function next(s: Settings, credentials: string[]): string[] {
  if (s.target === "local") return ["npx pulumi login --local", "npx pulumi stack init local   # once", "npx pulumi up --stack local"];
  const sets = credentials.map((c) => /`(pulumi config set [^`]*)`/.exec(c)?.[1]).filter((c): c is string => c !== undefined);
  return [...new Set(sets.map((c) => `npx ${c}`)), `npm run plan:check -- --stack ${s.stack}`, `npx pulumi preview --stack ${s.stack}`, `npx pulumi up --stack ${s.stack}`];
}

export function summarize(plan: Plan, settings: Settings, credentials: string[]): Summary {
  const turn = (plan.outputs.turnUris as string[] | undefined) ?? [];
  const monthly = settings.target === "digitalocean" ? cost(plan) : undefined;
  return {
    stack: plan.stack,
    target: settings.target,
    endpoints: { clientUrl: String(plan.outputs.matrixUrl), serverName: settings.serverName, federation: federation(settings), turn },
    openToInternet: settings.target === "local" ? localPorts(plan, settings) : cloudPorts(plan),
    adminAccess: adminAccess(settings, plan.outputs),
    ...(monthly ? { monthlyCostUsd: monthly } : {}),
    // FACTS.md (element-hq/dendrite README): no simplified sliding sync, no next-generation auth.
    clients: "Element Web and Element Desktop, and other clients of the classic client API; not Element X (Dendrite has no sliding sync nor next-generation auth)",
    warnings: warnings(plan, settings, credentials),
    next: next(settings, credentials),
  };
}

/** The summary as a person reads it, after the resource tree. */
export function renderSummary(s: Summary): string {
  const out: string[] = [`Summary of stack "${s.stack}" (${s.target})`, "", "  Users connect to"];
  out.push(`    client URL     ${s.endpoints.clientUrl}   (user IDs @name:${s.endpoints.serverName})`);
  out.push(`    federation     ${s.endpoints.federation}`);
  out.push(`    TURN           ${s.endpoints.turn.length > 0 ? s.endpoints.turn.join(", ") : "none"}`);
  out.push(`    clients        ${s.clients}`);
  out.push("", "  Open to the internet");
  for (const n of s.openToInternet) out.push(`    ${n.node}: ${n.ports.length > 0 ? n.ports.join(", ") : "nothing"}`);
  out.push("", "  Admin access");
  for (const a of s.adminAccess) out.push(`    ${a}`);
  if (s.monthlyCostUsd) {
    out.push("", `  Monthly cost   about USD ${s.monthlyCostUsd.total.toFixed(2)} (list prices; pulumi up reads live ones)`);
    for (const p of s.monthlyCostUsd.parts) out.push(`    ${p.usd.toFixed(2).padStart(7)}  ${p.item}`);
  }
  if (s.warnings.length > 0) {
    out.push("", "  Warnings");
    for (const w of s.warnings) out.push(`    ! ${w}`);
  }
  out.push("", "  Next");
  for (const n of s.next) out.push(`    ${n}`);
  return out.join("\n");
}
