import * as cloudflare from "@pulumi/cloudflare";
import * as pulumi from "@pulumi/pulumi";

export const DNS_TTL = 300;

export interface DnsArgs {
  zoneId: pulumi.Input<string>;
  /** The zone's domain: CAA records sit at its apex and cover every name under it. */
  domain: string;
  matrixFqdn: string;
  /** Reserved IP of the edge node. */
  edgeIpv4: pulumi.Input<string>;
  /** TURN host and the public address of the TURN node (its own address: relayed packets leave from it). */
  turn?: { fqdn: string; ipv4: pulumi.Input<string> };
  /** The server name, when Traefik must serve its /.well-known/matrix files (it then points at the edge). */
  wellKnownFqdn?: string;
  /** SRV delegation: `_matrix-fed._tcp.<serverName>` to the Matrix host's federation port. */
  srv?: { serverName: string; port: number };
  /** CAA: the only CA allowed to issue, and where it reports refused requests. */
  caa: { issuer: string; iodefEmail?: string };
  /** False with ingress funnel: the Matrix host is a ts.net name and nothing points at the edge. */
  publicEdge?: boolean;
}

/**
 * Cloudflare records for the public names. Nothing is proxied: Cloudflare cannot proxy 8448 nor
 * TURN, and proxying 443 would end TLS at Cloudflare instead of Traefik.
 * No AAAA: a droplet's IPv6 address changes when the droplet is replaced and DigitalOcean has no
 * reserved IPv6 for it, so an AAAA record would point at a stranger after a replacement.
 */
export class Dns extends pulumi.ComponentResource {
  readonly records: Record<string, pulumi.Output<string>> = {};

  constructor(name: string, args: DnsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:cloud:Dns", name, {}, opts);
    const child = { parent: this };
    const record = (id: string, recordArgs: Omit<cloudflare.DnsRecordArgs, "zoneId" | "ttl">) => {
      const r = new cloudflare.DnsRecord(`${name}-${id}`, { zoneId: args.zoneId, ttl: DNS_TTL, ...recordArgs }, child);
      this.records[id] = r.name;
      return r;
    };

    const aRecords = new Map<string, pulumi.Input<string>>();
    if (args.publicEdge !== false) {
      aRecords.set(args.matrixFqdn, args.edgeIpv4);
      if (args.wellKnownFqdn) aRecords.set(args.wellKnownFqdn, args.edgeIpv4);
    }
    if (args.turn && !aRecords.has(args.turn.fqdn)) aRecords.set(args.turn.fqdn, args.turn.ipv4);
    for (const [fqdn, ip] of aRecords) {
      record(`a-${fqdn}`, { name: fqdn, type: "A", content: ip, proxied: false, comment: "hardened-matrix" });
    }

    record("caa-issue", { name: args.domain, type: "CAA", data: { flags: 0, tag: "issue", value: args.caa.issuer }, comment: "only this CA may issue for the zone" });
    record("caa-issuewild", { name: args.domain, type: "CAA", data: { flags: 0, tag: "issuewild", value: ";" }, comment: "no wildcard certificates" });
    if (args.caa.iodefEmail) {
      record("caa-iodef", { name: args.domain, type: "CAA", data: { flags: 0, tag: "iodef", value: `mailto:${args.caa.iodefEmail}` } });
    }

    if (args.srv) {
      // Servers look up _matrix-fed._tcp since Matrix 1.8 and fall back to the deprecated _matrix._tcp,
      // the only name older servers know (spec: server-server API, Resolving server names;
      // matrix-org/gomatrixserverlib fclient/resolve.go lookupSRV). Both mean the same: connect to the
      // target, with SNI and Host = the server name.
      const srv = { priority: 10, weight: 5, port: args.srv.port, target: args.matrixFqdn };
      record("srv-matrix-fed", { name: `_matrix-fed._tcp.${args.srv.serverName}`, type: "SRV", data: srv, comment: "Matrix federation delegation" });
      record("srv-matrix", { name: `_matrix._tcp.${args.srv.serverName}`, type: "SRV", data: srv, comment: "Matrix federation delegation (pre-1.8 name)" });
    }

    this.registerOutputs({ records: this.records });
  }
}
