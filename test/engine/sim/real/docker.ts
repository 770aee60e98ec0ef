/**
 * The docker provider's resources applied to a real Docker engine (Engine API over its unix socket),
 * as kreuzwerker/terraform-provider-docker applies them (internal/provider/resource_docker_service_funcs.go,
 * resource_docker_network_funcs.go, resource_docker_secret.go, resource_docker_config.go,
 * resource_docker_volume.go). Networks, secrets, configs and volumes have no Update upstream (every
 * attribute ForceNew, test/engine/sim/schema.ts), so the engine replaces them; services update in
 * place with their version index.
 */
import { containerLogs, DockerApi, DockerError, filters } from "./dockerApi";
import { networkBody, secretBody, serviceSpec, volumeBody, type ConvergeConfig } from "./serviceSpec";
import { plain, type Props } from "../values";

export const REAL_DOCKER_TYPES = [
  "docker:index/network:Network",
  "docker:index/volume:Volume",
  "docker:index/secret:Secret",
  "docker:index/serviceConfig:ServiceConfig",
  "docker:index/service:Service",
] as const;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Task {
  ID: string;
  Slot?: number;
  DesiredState: string;
  Status: { State: string; Err?: string; Message?: string; ContainerStatus?: { ContainerID?: string } };
}
interface ServiceInspect {
  ID: string;
  Version: { Index: number };
  Spec: { Mode?: { Replicated?: { Replicas?: number } } };
  UpdateStatus?: { State?: string; Message?: string };
}

/** The engine's word on a service's tasks, and the last lines a failed one logged (as deleteService collects them). */
async function taskReport(api: DockerApi, id: string): Promise<string> {
  const tasks = await api.call<Task[]>("GET", `/tasks?filters=${filters({ service: [id] })}`).catch(() => [] as Task[]);
  const lines = tasks
    .slice(0, 6)
    .map((t) => `  task ${t.ID.slice(0, 12)} desired ${t.DesiredState}, ${t.Status.State}${t.Status.Err ? `: ${t.Status.Err}` : t.Status.Message ? ` (${t.Status.Message})` : ""}`);
  const failed = tasks.find((t) => t.Status.State === "failed" && t.Status.ContainerStatus?.ContainerID);
  const logs = failed ? await containerLogs(api, failed.Status.ContainerStatus!.ContainerID!).catch(() => "") : "";
  return `${lines.join("\n")}${logs ? `\nLast task logs:\n${logs}` : ""}`;
}

/**
 * Waits as the provider's converge_config does: `delay` first, then until the replicas' tasks run
 * (a task with a healthcheck reports running only once healthy: moby daemon/cluster/executor/container
 * controller.go waits for health before Start returns), an update's status completes, or `timeout`.
 */
async function converge(api: DockerApi, id: string, cc: ConvergeConfig, update: boolean): Promise<void> {
  const deadline = Date.now() + cc.timeoutMs;
  await sleep(Math.min(cc.delayMs, cc.timeoutMs));
  for (;;) {
    const svc = await api.call<ServiceInspect>("GET", `/services/${id}`);
    const us = svc.UpdateStatus?.State;
    if (update && us === "completed") return;
    if (update && (us === "rollback_completed" || us === "paused" || us === "rollback_paused")) {
      throw new Error(`service ${id}: update ${us}: ${svc.UpdateStatus?.Message ?? ""}\n${await taskReport(api, id)}`);
    }
    const replicas = svc.Spec.Mode?.Replicated?.Replicas;
    if (replicas === undefined) throw new Error(`service ${id}: no replica count`);
    const tasks = await api.call<Task[]>("GET", `/tasks?filters=${filters({ service: [id], "desired-state": ["running"] })}`);
    const running = tasks.filter((t) => t.Status.State === "running").length;
    // Stricter than upstream (which counts running tasks mid-update): an update still in progress
    // (old task not yet replaced, or its monitor period not over) is waited for.
    if (running === replicas && !(update && us === "updating")) return;
    if (Date.now() > deadline) {
      throw new Error(`Service with ID (${id}) did not converge after ${cc.timeoutMs / 1000}s: ${running}/${replicas} running\n${await taskReport(api, id)}`);
    }
    await sleep(1000);
  }
}

/** Removes a service and waits (bounded by its stop grace period) until its containers are gone. */
async function removeService(api: DockerApi, id: string, graceNs: number | undefined): Promise<void> {
  try {
    await api.call("DELETE", `/services/${id}`);
  } catch (e) {
    if (e instanceof DockerError && e.status === 404) return;
    throw e;
  }
  const deadline = Date.now() + (graceNs ?? 10e9) / 1e6 + 30_000;
  const byService = `/containers/json?all=1&filters=${filters({ label: [`com.docker.swarm.service.id=${id}`] })}`;
  for (;;) {
    const left = await api.call<Array<{ Id: string }>>("GET", byService);
    if (left.length === 0) return;
    if (Date.now() > deadline) {
      // As deleteService does after the grace period: force-remove what is left.
      for (const c of left) await api.call("DELETE", `/containers/${c.Id}?force=1&v=1`).catch(() => undefined);
      return;
    }
    await sleep(500);
  }
}

const PATHS: Record<string, string> = {
  "docker:index/network:Network": "networks",
  "docker:index/volume:Volume": "volumes",
  "docker:index/secret:Secret": "secrets",
  "docker:index/serviceConfig:ServiceConfig": "configs",
  "docker:index/service:Service": "services",
};

export class RealDocker {
  readonly api: DockerApi;
  constructor(host: string) {
    this.api = DockerApi.fromHost(host);
  }

  async create(type: string, inputs: Props): Promise<string> {
    const p = plain(inputs) as Props;
    switch (type) {
      case "docker:index/network:Network":
        return (await this.api.call<{ Id: string }>("POST", "/networks/create", { ...networkBody(p), CheckDuplicate: true })).Id;
      case "docker:index/volume:Volume":
        return (await this.api.call<{ Name: string }>("POST", "/volumes/create", volumeBody(p))).Name;
      case "docker:index/secret:Secret":
        return (await this.api.call<{ ID: string }>("POST", "/secrets/create", secretBody(p, "secret"))).ID;
      case "docker:index/serviceConfig:ServiceConfig":
        return (await this.api.call<{ ID: string }>("POST", "/configs/create", secretBody(p, "config"))).ID;
      case "docker:index/service:Service": {
        const { spec, converge: cc } = serviceSpec(p);
        const { ID } = await this.api.call<{ ID: string }>("POST", "/services/create", spec);
        if (cc) {
          try {
            await converge(this.api, ID, cc, false);
          } catch (e) {
            // The provider deletes a service that did not converge (resourceDockerServiceCreate).
            await removeService(this.api, ID, (spec.TaskTemplate as { ContainerSpec?: { StopGracePeriod?: number } }).ContainerSpec?.StopGracePeriod);
            throw e;
          }
        }
        return ID;
      }
    }
    throw new Error(`real mode does not apply ${type}`);
  }

  /** Only services have an Update upstream; the engine replaces the others (allForceNew). */
  async update(type: string, id: string, news: Props): Promise<void> {
    if (type !== "docker:index/service:Service") throw new Error(`${type} has no in-place update (the provider's attributes are all ForceNew)`);
    const { spec, converge: cc } = serviceSpec(plain(news) as Props);
    const current = await this.api.call<ServiceInspect>("GET", `/services/${id}`);
    await this.api.call("POST", `/services/${id}/update?version=${current.Version.Index}`, spec);
    if (cc) await converge(this.api, id, { ...cc, delayMs: 7000 }, true);
  }

  async delete(type: string, id: string, props: Props): Promise<void> {
    const kind = PATHS[type]!;
    if (type === "docker:index/service:Service") {
      const { spec } = serviceSpec(plain(props) as Props);
      return removeService(this.api, id, (spec.TaskTemplate as { ContainerSpec?: { StopGracePeriod?: number } }).ContainerSpec?.StopGracePeriod);
    }
    // A network's endpoints go a moment after its service's tasks: the provider retries for 30 s
    // (resource_docker_network_funcs.go networkRemoveRefreshTimeout).
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await this.api.call("DELETE", `/${kind}/${encodeURIComponent(id)}`);
        return;
      } catch (e) {
        if (e instanceof DockerError && e.status === 404) return;
        if (Date.now() > deadline || !(e instanceof DockerError) || !/active endpoints|in use/.test(e.message)) throw e;
        await sleep(2000);
      }
    }
  }

  /** Whether the object still exists (a refresh drops it from state when gone). */
  async exists(type: string, id: string): Promise<boolean> {
    try {
      await this.api.call("GET", `/${PATHS[type]!}/${encodeURIComponent(id)}`);
      return true;
    } catch (e) {
      if (e instanceof DockerError && e.status === 404) return false;
      throw e;
    }
  }
}
