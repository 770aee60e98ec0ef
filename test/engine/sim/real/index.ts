/**
 * Real mode of the simulated providers: with HM_REAL_DOCKER_HOST=unix:///path/docker.sock (set by
 * the harness from run.ts `--docker-host`), docker resources are applied to that engine for real and
 * command:local:Command runs its commands with DOCKER_HOST pointed at it. Everything else (random,
 * and the cloud providers) stays simulated. Diffs stay the simulated provider's (the upstream
 * ForceNew table, schema.ts): the same decision the real provider makes.
 *
 * The program's docker provider says `host: unix:///var/run/docker.sock` (components/platform/local.ts).
 * In real mode, and only there, that host is redirected to HM_REAL_DOCKER_HOST: this SDK provider
 * receives no provider configuration (no Configure hook in @pulumi/pulumi/provider), so every docker
 * resource goes to the private engine, never to the machine's own.
 */
import type * as provider from "@pulumi/pulumi/provider";
import { journal, withCloud } from "../cloud";
import type { Props } from "../values";
import { runCommand, type CommandOutputs } from "./command";
import { RealDocker, REAL_DOCKER_TYPES } from "./docker";

const COMMAND = "command:local:Command";
const typeOfUrn = (urn: string): string => urn.split("::")[2]!.split("$").pop()!;

export function realDockerHost(): string | undefined {
  return process.env.HM_REAL_DOCKER_HOST || undefined;
}

/** The provider with its docker resources and commands made real, when real mode is on. */
export function withRealMode(base: provider.Provider): provider.Provider {
  const host = realDockerHost();
  if (!host) return base;
  const docker = new RealDocker(host);
  const real = (type: string) => type === COMMAND || (REAL_DOCKER_TYPES as readonly string[]).includes(type);
  // The journal of the simulated cloud records real operations too, in the order they happened.
  const record = (op: "create" | "update" | "delete", type: string, urn: string, id: string) => withCloud((c) => journal(c, op, type, urn, id));
  let seq = 0;
  return {
    ...base,
    async create(urn: string, inputs: Props) {
      const type = typeOfUrn(urn);
      if (!real(type)) return base.create!(urn, inputs);
      let id: string;
      let outs: Props;
      if (type === COMMAND) {
        const o = await runCommand(host, "create", inputs);
        id = `cmd-${process.pid}-${Date.now()}-${(seq += 1)}`;
        outs = { ...inputs, stdout: o?.stdout ?? "", stderr: o?.stderr ?? "" };
      } else {
        id = await docker.create(type, inputs);
        outs = { ...inputs };
      }
      record("create", type, urn, id);
      return { id, outs };
    },
    async update(id: string, urn: string, olds: Props, news: Props) {
      const type = typeOfUrn(urn);
      if (!real(type)) return base.update!(id, urn, olds, news);
      let outs: Props;
      if (type === COMMAND) {
        const previous: CommandOutputs = { stdout: String(olds.stdout ?? ""), stderr: String(olds.stderr ?? "") };
        const o = await runCommand(host, "update", news, previous);
        outs = { ...news, ...(o ?? previous) };
      } else {
        await docker.update(type, id, news);
        outs = { ...news };
      }
      record("update", type, urn, id);
      return { outs };
    },
    async delete(id: string, urn: string, props: Props) {
      const type = typeOfUrn(urn);
      if (!real(type)) return base.delete!(id, urn, props);
      if (type === COMMAND) await runCommand(host, "delete", props, { stdout: String(props.stdout ?? ""), stderr: String(props.stderr ?? "") });
      else await docker.delete(type, id, props);
      record("delete", type, urn, id);
    },
    async read(id: string, urn: string, props: Props) {
      const type = typeOfUrn(urn);
      if (!real(type)) return base.read!(id, urn, props);
      if (type === COMMAND) return { id, props };
      return (await docker.exists(type, id)) ? { id, props } : { id: "", props: {} };
    },
  };
}
