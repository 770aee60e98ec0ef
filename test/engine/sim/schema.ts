/**
 * What each upstream provider does when an input changes: the fields whose change forces a new
 * resource (Terraform SDKv2 `ForceNew: true`, plugin-framework `RequiresReplace()`, pulumi-command
 * `provider:"replaceOnChanges"`), per resource type this program uses, with the evidence (upstream
 * repository and file). Pulumi names are the bridge's camelCase of the Terraform names.
 *
 * Read from the upstream sources (default branch, 2026-06..08) of:
 *   digitalocean/terraform-provider-digitalocean, kreuzwerker/terraform-provider-docker,
 *   tailscale/terraform-provider-tailscale, hashicorp/terraform-provider-random,
 *   cloudflare/terraform-provider-cloudflare (v5, generated schemas), pulumi/pulumi-command.
 * test/engineSchema.test.ts checks every field against the SDK packages in node_modules (each named
 * field is an input of that type) and, where the Go module proxy serves the upstream provider
 * (kreuzwerker/terraform-provider-docker, downloaded by build-engine.sh), against its source; the
 * others were read from the upstream repositories (GitHub snapshots), not checked automatically.
 */
export interface TypeSchema {
  /** Upstream repository and path of the resource's schema. */
  evidence: string;
  /** Inputs whose change replaces the resource. */
  forceNew: readonly string[];
  /** Outputs the provider computes (not inputs: their absence from new inputs is no change). */
  computed: readonly string[];
  /** The provider has no Update: every input change replaces (e.g. Terraform resources without UpdateContext). */
  allForceNew?: boolean;
}

const DO = "digitalocean/terraform-provider-digitalocean";
const DOCKER = "kreuzwerker/terraform-provider-docker";

export const SCHEMAS: Record<string, TypeSchema> = {
  "digitalocean:index/droplet:Droplet": {
    evidence: `${DO} digitalocean/droplet/resource_droplet.go`,
    // Also droplet_agent, gpu_partition_mode, public_networking: not used here.
    forceNew: ["image", "region", "sshKeys", "userData", "vpcUuid", "monitoring"],
    computed: ["urn", "ipv4Address", "ipv4AddressPrivate", "ipv6Address", "createdAt", "status", "memory", "vcpus", "disk", "priceMonthly", "priceHourly", "locked", "volumeIds"],
  },
  "digitalocean:index/volume:Volume": {
    evidence: `${DO} digitalocean/volume/resource_volume.go`,
    forceNew: ["region", "name", "description", "initialFilesystemType", "initialFilesystemLabel", "snapshotId"],
    computed: ["urn", "dropletIds", "filesystemType", "filesystemLabel"],
  },
  "digitalocean:index/volumeAttachment:VolumeAttachment": {
    evidence: `${DO} digitalocean/volume/resource_volume_attachment.go`,
    forceNew: ["dropletId", "volumeId"],
    computed: [],
  },
  "digitalocean:index/vpc:Vpc": {
    evidence: `${DO} digitalocean/vpc/resource_vpc.go`,
    forceNew: ["region", "ipRange"],
    computed: ["urn", "default", "createdAt"],
  },
  "digitalocean:index/tag:Tag": {
    evidence: `${DO} digitalocean/tag/resource_tag.go`,
    forceNew: ["name"],
    computed: ["dropletsCount", "totalResourceCount", "volumesCount", "imagesCount", "databasesCount", "volumeSnapshotsCount", "availableDropletsCount"],
  },
  "digitalocean:index/firewall:Firewall": {
    evidence: `${DO} digitalocean/firewall/resource_firewall.go`,
    forceNew: [],
    computed: ["status", "createdAt", "pendingChanges", "dropletIds"],
  },
  "digitalocean:index/reservedIp:ReservedIp": {
    evidence: `${DO} digitalocean/reservedip/resource_reserved_ip.go`,
    forceNew: ["region"],
    computed: ["ipAddress", "urn"],
  },
  "digitalocean:index/reservedIpAssignment:ReservedIpAssignment": {
    evidence: `${DO} digitalocean/reservedip/resource_reserved_ip_assignment.go`,
    forceNew: ["ipAddress", "dropletId"],
    computed: [],
  },
  "digitalocean:index/spacesBucket:SpacesBucket": {
    // `name` is not ForceNew upstream (the bucket keeps its name; Update changes only ACL, CORS, versioning, lifecycle).
    evidence: `${DO} digitalocean/spaces/resource_spaces_bucket.go`,
    forceNew: ["region"],
    computed: ["urn", "bucketDomainName", "endpoint"],
  },
  "digitalocean:index/spacesKey:SpacesKey": {
    evidence: `${DO} digitalocean/spaces/resource_spaces_key.go`,
    forceNew: [],
    computed: ["accessKey", "secretKey", "createdAt"],
  },
  "cloudflare:index/dnsRecord:DnsRecord": {
    evidence: "cloudflare/terraform-provider-cloudflare internal/services/dns_record/schema.go",
    forceNew: ["zoneId"],
    computed: ["createdOn", "modifiedOn", "proxiable", "meta", "commentModifiedOn", "tagsModifiedOn", "settings", "tags"],
  },
  "cloudflare:index/workersScript:WorkersScript": {
    // Not read upstream (only dns_record/schema.go was): assumed from that file's pattern (the ids in the path RequiresReplace).
    evidence: "cloudflare/terraform-provider-cloudflare internal/services/workers_script/schema.go (unverified)",
    forceNew: ["accountId", "scriptName"],
    computed: ["createdOn", "modifiedOn", "etag", "startupTimeMs", "hasAssets", "hasModules", "handlers"],
  },
  "cloudflare:index/workersRoute:WorkersRoute": {
    // Not read upstream either; same assumption.
    evidence: "cloudflare/terraform-provider-cloudflare internal/services/workers_route/schema.go (unverified)",
    forceNew: ["zoneId"],
    computed: [],
  },
  "tailscale:index/acl:Acl": {
    evidence: "tailscale/terraform-provider-tailscale tailscale/resource_acl.go",
    forceNew: [],
    computed: [],
  },
  "tailscale:index/tailnetKey:TailnetKey": {
    evidence: "tailscale/terraform-provider-tailscale tailscale/resource_tailnet_key.go",
    forceNew: ["reusable", "ephemeral", "tags", "preauthorized", "expiry", "description"],
    computed: ["key", "createdAt", "expiresAt", "invalid", "userId"],
  },
  "tailscale:index/tailnetSettings:TailnetSettings": {
    evidence: "tailscale/terraform-provider-tailscale tailscale/resource_tailnet_settings.go",
    forceNew: [],
    computed: [],
  },
  "random:index/randomBytes:RandomBytes": {
    evidence: "hashicorp/terraform-provider-random internal/provider/resource_bytes.go",
    forceNew: ["length", "keepers"],
    computed: ["base64", "hex"],
  },
  "random:index/randomId:RandomId": {
    evidence: "hashicorp/terraform-provider-random internal/provider/resource_id.go",
    forceNew: ["byteLength", "prefix", "keepers"],
    computed: ["b64Std", "b64Url", "dec", "hex"],
  },
  "random:index/randomPassword:RandomPassword": {
    evidence: "hashicorp/terraform-provider-random internal/provider/resource_password.go",
    forceNew: ["length", "keepers", "lower", "upper", "numeric", "number", "special", "minLower", "minUpper", "minNumeric", "minSpecial", "overrideSpecial"],
    computed: ["result", "bcryptHash"],
  },
  "docker:index/network:Network": {
    // Every attribute is ForceNew: the resource has no Update.
    evidence: `${DOCKER} internal/provider/resource_docker_network.go`,
    forceNew: ["name", "driver", "options", "attachable", "internal", "ingress", "ipv6", "ipamDriver", "ipamOptions", "ipamConfigs", "labels"],
    computed: ["scope"],
    allForceNew: true,
  },
  "docker:index/secret:Secret": {
    evidence: `${DOCKER} internal/provider/resource_docker_secret.go`,
    forceNew: ["name", "data", "labels"],
    computed: [],
    allForceNew: true,
  },
  "docker:index/serviceConfig:ServiceConfig": {
    evidence: `${DOCKER} internal/provider/resource_docker_config.go`,
    forceNew: ["name", "data", "dataRaw", "labels"],
    computed: [],
    allForceNew: true,
  },
  "docker:index/volume:Volume": {
    evidence: `${DOCKER} internal/provider/resource_docker_volume.go`,
    forceNew: ["name", "driver", "driverOpts", "labels"],
    computed: ["mountpoint"],
    allForceNew: true,
  },
  "docker:index/service:Service": {
    evidence: `${DOCKER} internal/provider/resource_docker_service.go`,
    forceNew: ["name", "mode", "auth"],
    computed: [],
  },
  "command:local:Command": {
    evidence: 'pulumi/pulumi-command provider/pkg/provider/common/inputs.go (Triggers provider:"replaceOnChanges")',
    forceNew: ["triggers"],
    computed: ["stdout", "stderr"],
  },
};

export function schemaOf(type: string): TypeSchema {
  const s = SCHEMAS[type];
  if (!s) throw new Error(`the simulated providers do not know ${type}: add it to test/engine/sim/schema.ts with its upstream evidence`);
  return s;
}
