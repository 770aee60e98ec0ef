import { createHash } from "node:crypto";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";

/**
 * Swarm configs and secrets are immutable: a changed file needs a new object. Naming each one
 * after a hash of its content lets Pulumi create the new object, move the service to it, and
 * only then delete the old one. That order needs `deleteBeforeReplace: false` said explicitly: the
 * bridge asks for delete-before-replace whenever an auto-named `name` is set by the program
 * (pulumi/pulumi-terraform-bridge pkg/tfbridge schema.go nameRequiresDeleteBeforeReplace;
 * pulumi-docker provider/resources.go SetAutonaming, no UniqueNameFields), and Docker refuses to
 * remove a secret or config a service still uses, so every rotation failed (drill
 * rotate-postgres-dendrite-password). The user's option overrides the provider's request
 * (pulumi/pulumi pkg/resource/deploy/step_generator.go: goal.DeleteBeforeReplace).
 */
function contentName(baseName: string, content: pulumi.Input<string>): pulumi.Output<string> {
  // The name is derived from the content but reveals nothing usable about it.
  return pulumi.unsecret(pulumi.output(content).apply((c) => `${baseName}-${createHash("sha256").update(c).digest("hex").slice(0, 12)}`));
}

export function swarmConfig(name: string, baseName: string, content: pulumi.Input<string>, opts: pulumi.CustomResourceOptions): docker.ServiceConfig {
  return new docker.ServiceConfig(
    name,
    { name: contentName(baseName, content), data: pulumi.output(content).apply((c) => Buffer.from(c, "utf8").toString("base64")) },
    { ...opts, deleteBeforeReplace: false },
  );
}

export function swarmSecret(name: string, baseName: string, content: pulumi.Input<string>, opts: pulumi.CustomResourceOptions): docker.Secret {
  return new docker.Secret(
    name,
    { name: contentName(baseName, content), data: pulumi.secret(pulumi.output(content).apply((c) => Buffer.from(c, "utf8").toString("base64"))) },
    { ...opts, deleteBeforeReplace: false },
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
