import { createHash } from "node:crypto";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";

/**
 * Swarm configs and secrets are immutable: a changed file needs a new object. Naming each one
 * after a hash of its content lets Pulumi create the new object, move the service to it, and
 * only then delete the old one.
 *
 * That order must be asked for: the docker provider autonames every `name` (pulumi/pulumi-docker
 * provider/resources.go SetAutonaming), so an explicit name makes the bridge ask for
 * delete-before-replace (pulumi-terraform-bridge nameRequiresDeleteBeforeReplace), and Docker
 * refuses to delete a secret or config a service still uses: the `up` fails. An explicit
 * `deleteBeforeReplace: false` overrides the provider's request (pulumi/pulumi
 * pkg/resource/deploy/step_generator.go). Seen on a real engine: test/localDeploy.real.test.ts.
 */
const createFirst = (opts: pulumi.CustomResourceOptions): pulumi.CustomResourceOptions => ({ ...opts, deleteBeforeReplace: false });
function contentName(baseName: string, content: pulumi.Input<string>): pulumi.Output<string> {
  // The name is derived from the content but reveals nothing usable about it.
  return pulumi.unsecret(pulumi.output(content).apply((c) => `${baseName}-${createHash("sha256").update(c).digest("hex").slice(0, 12)}`));
}

export function swarmConfig(name: string, baseName: string, content: pulumi.Input<string>, opts: pulumi.CustomResourceOptions): docker.ServiceConfig {
  return new docker.ServiceConfig(
    name,
    { name: contentName(baseName, content), data: pulumi.output(content).apply((c) => Buffer.from(c, "utf8").toString("base64")) },
    createFirst(opts),
  );
}

export function swarmSecret(name: string, baseName: string, content: pulumi.Input<string>, opts: pulumi.CustomResourceOptions): docker.Secret {
  return new docker.Secret(
    name,
    { name: contentName(baseName, content), data: pulumi.secret(pulumi.output(content).apply((c) => Buffer.from(c, "utf8").toString("base64"))) },
    createFirst(opts),
  );
}

/** Mounts a secret read-only for one uid:gid. */
export function secretMount(secret: docker.Secret, fileName: string, user: string): docker.types.input.ServiceTaskSpecContainerSpecSecret {
  const [uid, gid] = user.split(":");
  return { secretId: secret.id, secretName: secret.name, fileName, fileUid: uid, fileGid: gid, fileMode: 0o400 };
}

export function configMount(config: docker.ServiceConfig, fileName: string, user: string): docker.types.input.ServiceTaskSpecContainerSpecConfig {
  const [uid, gid] = user.split(":");
  return { configId: config.id, configName: config.name, fileName, fileUid: uid, fileGid: gid, fileMode: 0o444 };
}
