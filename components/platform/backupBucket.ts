import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";

export interface BackupBucketArgs {
  stack: string;
  /** A region with Spaces (settings check it). */
  region: string;
  /** Days a deleted or overwritten object stays recoverable as a noncurrent version. */
  noncurrentDays?: number;
}

/** The S3 endpoint of a Spaces region (docs.digitalocean.com/products/spaces: <region>.digitaloceanspaces.com). */
export function spacesEndpoint(region: string): string {
  return `https://${region}.digitaloceanspaces.com`;
}

/**
 * Off-site storage for the stack's backups: a private Spaces bucket and a key that can read and
 * write that bucket only (SpacesKey grants, permission "readwrite": @pulumi/digitalocean 4.80.1
 * spacesKey.d.ts). The bucket outlives the stack (protected, retained); versioning keeps deleted
 * objects for `noncurrentDays`. Whether a "readwrite" grant can also delete old versions is not
 * documented; the repository is restic-encrypted either way, so Spaces sees only ciphertext.
 *
 * Creating a bucket needs the provider's own Spaces keys (digitalocean:spacesAccessId and
 * digitalocean:spacesSecretKey), as the Spaces API is S3, not the DigitalOcean API.
 */
export class BackupBucket extends pulumi.ComponentResource {
  readonly repository: pulumi.Output<string>;
  readonly bucketName: pulumi.Output<string>;
  readonly accessKeyId: pulumi.Output<string>;
  readonly secretAccessKey: pulumi.Output<string>;

  constructor(name: string, args: BackupBucketArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:platform:BackupBucket", name, {}, opts);
    // Bucket names are global: a random suffix, stable in state. Protected: the provider never renames
    // a bucket (digitalocean/terraform-provider-digitalocean digitalocean/spaces/resource_spaces_bucket.go:
    // Update changes ACL, CORS, versioning and lifecycle only, Read uses the id), so a new suffix would
    // record a new name and point the backups at a bucket that does not exist (drill rotate-backup-bucket-suffix).
    const suffix = new random.RandomId(`${name}-suffix`, { byteLength: 4 }, { parent: this, protect: true });
    const bucket = new digitalocean.SpacesBucket(
      `${name}-bucket`,
      {
        name: pulumi.interpolate`hm-${args.stack}-backup-${suffix.hex}`,
        region: args.region,
        acl: "private",
        forceDestroy: false,
        versioning: { enabled: true },
        lifecycleRules: [
          { id: "noncurrent", enabled: true, noncurrentVersionExpiration: { days: args.noncurrentDays ?? 30 } },
          { id: "multipart", enabled: true, abortIncompleteMultipartUploadDays: 2 },
        ],
      },
      { parent: this, protect: true, retainOnDelete: true },
    );
    const key = new digitalocean.SpacesKey(
      `${name}-key`,
      { name: pulumi.interpolate`${bucket.name}-writer`, grants: [{ bucket: bucket.name, permission: "readwrite" }] },
      { parent: this, additionalSecretOutputs: ["secretKey"] },
    );
    this.bucketName = bucket.name;
    this.repository = pulumi.interpolate`s3:${spacesEndpoint(args.region)}/${bucket.name}`;
    this.accessKeyId = pulumi.secret(key.accessKey);
    this.secretAccessKey = pulumi.secret(key.secretKey);
    this.registerOutputs({ repository: this.repository, bucketName: this.bucketName });
  }
}
