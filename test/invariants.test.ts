import assert from "node:assert/strict";
import { test } from "node:test";
import { EXCEPTION_LABEL_PREFIX } from "../components/hardening";
import { parse } from "yaml";
import { DROPLET, firewallsOf, forbiddenInbound, ofType, RECORD, runcmd } from "./support/cloud";
import { planToDisk, STACKS } from "./support/plan";

// Cross-cutting invariants over every resource of every stack file, planned by the real CLI.
type Inputs = Record<string, any>;
const SECRET_ENV = /(PASSWORD|PASSWD|SECRET|TOKEN|_KEY)$/i;
// The complete list of hardening exceptions. A new one must be added here, on purpose.
const EXPECTED_EXCEPTIONS: Record<string, string[]> = {
  coturn: ["cap-add.NET_BIND_SERVICE", "host-network"],
};

for (const stack of STACKS) {
  const plan = planToDisk(stack);
  const services = plan.resources.filter((r) => r.type === "docker:index/service:Service");
  const label = (s: Inputs, key: string): string | undefined => s.labels?.find((l: Inputs) => l.label === key)?.value;

  test(`${stack}: every service meets the hardening baseline or names its exception`, () => {
    assert.ok(services.length >= 2, "no services planned");
    for (const r of services) {
      const s = r.inputs as Inputs;
      const c = s.taskSpec.containerSpec;
      const who = `${stack}/${s.name}`;
      assert.deepEqual(c.capDrops, ["ALL"], `${who}: capDrops`);
      for (const cap of c.capAdds ?? []) assert.ok(label(s, `${EXCEPTION_LABEL_PREFIX}cap-add.${cap}`), `${who}: adds ${cap} without a named reason`);
      const [uid, gid] = String(c.user).split(":");
      if (uid === "0" || gid === "0") assert.ok(label(s, `${EXCEPTION_LABEL_PREFIX}root`), `${who}: root without a reason`);
      assert.match(String(c.user), /^\d+:\d+$/, `${who}: user`);
      if (c.readOnly !== true) assert.ok(label(s, `${EXCEPTION_LABEL_PREFIX}writable-root`), `${who}: writable root without a reason`);
      assert.ok(s.taskSpec.resources.limits.memoryBytes > 0, `${who}: memory limit`);
      assert.ok(s.taskSpec.resources.reservation.memoryBytes > 0, `${who}: memory reservation`);
      assert.ok(c.healthcheck?.tests?.length > 1, `${who}: healthcheck`);
      assert.equal(s.taskSpec.restartPolicy.condition, "any", `${who}: restart policy`);
      assert.equal(s.updateConfig.failureAction, "rollback", `${who}: update rollback`);
      assert.match(String(c.image), /(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$/, `${who}: image pinned`);
      assert.doesNotMatch(String(c.image), /:latest$/, `${who}: image pinned`);
      assert.equal(s.taskSpec.logDriver.options["max-size"], "10m", `${who}: log rotation`);
      for (const key of Object.keys(c.env ?? {})) assert.doesNotMatch(key, SECRET_ENV, `${who}: secret-looking env ${key}`);
      for (const value of Object.values(c.env ?? {})) assert.notEqual(value, "[secret]", `${who}: a secret value in env`);
      for (const m of c.mounts ?? []) {
        if (String(m.source ?? "").includes("docker.sock")) {
          assert.equal(s.name, "socket-proxy", `${who}: only the socket proxy may mount the Docker socket`);
          assert.equal(m.readOnly, true, `${who}: socket mounted read-only`);
        }
      }
      const onHost = s.taskSpec.networksAdvanceds.some((n: Inputs) => n.name === "host");
      if (onHost) assert.ok(label(s, `${EXCEPTION_LABEL_PREFIX}host-network`), `${who}: host network without a reason`);
      // Attached by the network resources' ids: Swarm stores ids, so a name would differ on every plan.
      const networkIds = new Set(plan.resources.filter((n) => n.type === "docker:index/network:Network").map((n) => n.id));
      for (const n of s.taskSpec.networksAdvanceds) {
        if (onHost) {
          assert.deepEqual(s.taskSpec.networksAdvanceds, [{ name: "host" }], `${who}: host network and nothing else`);
          continue;
        }
        assert.equal(n.name, undefined, `${who}: network attached by name ${n.name}`);
        assert.ok(networkIds.has(n.id), `${who}: network ${n.id} is not the id of a planned docker network`);
      }
      for (const m of c.mounts ?? []) {
        if (m.type === "tmpfs") assert.equal(m.tmpfsOptions.mode & 0o1777, 0o1777, `${who}: tmpfs ${m.target} not writable by a non-root user`);
      }
      for (const secret of c.secrets ?? []) assert.equal(secret.fileMode, 0o400, `${who}: secret file mode`);
    }
  });

  test(`${stack}: the hardening exceptions are exactly the expected ones`, () => {
    for (const r of services) {
      const s = r.inputs as Inputs;
      const exceptions = (s.labels ?? [])
        .map((l: Inputs) => String(l.label))
        .filter((l: string) => l.startsWith(EXCEPTION_LABEL_PREFIX))
        .map((l: string) => l.slice(EXCEPTION_LABEL_PREFIX.length))
        .sort();
      assert.deepEqual(exceptions, EXPECTED_EXCEPTIONS[s.name] ?? [], `${stack}/${s.name}`);
    }
  });

  test(`${stack}: only Traefik (and TURN, on its own ports) publish ports, and the Docker API is never published`, () => {
    const published = services.filter((r) => (r.inputs as Inputs).endpointSpec?.ports?.length).map((r) => (r.inputs as Inputs).name);
    for (const name of published) assert.ok(["traefik", "coturn"].includes(name), `${stack}: ${name} publishes ports`);
    for (const r of services) {
      for (const p of (r.inputs as Inputs).endpointSpec?.ports ?? []) {
        assert.ok(![2375, 2376, 2377, 5432, 7946, 4789].includes(p.publishedPort), `${stack}: publishes ${p.publishedPort}`);
      }
    }
  });

  test(`${stack}: secrets are redacted leaf by leaf in resources.json and outputs.json`, () => {
    const text = JSON.stringify(plan.resources) + JSON.stringify(plan.outputs);
    assert.doesNotMatch(text, /mock-secret-for-/, "a secure config placeholder leaked");
    const secrets = plan.resources.filter((x) => x.type === "docker:index/secret:Secret");
    assert.ok(secrets.length >= 4, "the stack's generated secrets reach services as Swarm secrets");
    for (const r of secrets) {
      assert.equal((r.inputs as Inputs).data, "[secret]", `${r.name}: data not redacted`);
      assert.notEqual((r.inputs as Inputs).name, "[secret]", `${r.name}: the name is not secret and must stay readable`);
    }
  });

  const droplets = ofType(plan, DROPLET);
  if (droplets.length > 0) {
    test(`${stack}: cloud firewalls never let in SSH, Docker, Swarm or Postgres, and every node has outbound rules`, () => {
      assert.deepEqual(forbiddenInbound(plan), []);
      for (const d of droplets) {
        const name = (d.inputs as Inputs).name;
        const outbound = firewallsOf(plan, name).flatMap((f) => (f.inputs as Inputs).outboundRules as Inputs[]);
        assert.deepEqual([...new Set(outbound.map((r) => r.protocol))].sort(), ["icmp", "tcp", "udp"], `${stack}/${name}: outbound`);
      }
    });

    test(`${stack}: every volume is protected and retained on delete`, () => {
      const volumes = plan.resources.filter((r) => r.type === "digitalocean:index/volume:Volume");
      assert.ok(volumes.length > 0);
      for (const v of volumes) assert.ok(v.options.protect && v.options.retainOnDelete, `${stack}/${v.name}`);
    });

    test(`${stack}: every node's user data is secret, never replaces it, blocks the metadata service and sets no-new-privileges`, () => {
      for (const d of droplets) {
        const name = String((d.inputs as Inputs).name);
        assert.equal((d.inputs as Inputs).userData, "[secret]", `${stack}/${name}: user data in plain text`);
        assert.ok(d.options.ignoreChanges.includes("userData"), `${stack}/${name}: a user-data edit would replace the node`);
        const text = plan.files.get(`${name}/user-data.yaml`);
        assert.ok(text, `${stack}/${name}: no user data file`);
        assert.match(text, /^#cloud-config\n/);
        const doc = parse(text) as Inputs;
        const file = (path: string): string => String((doc.write_files as Inputs[]).find((w) => w.path === path)?.content ?? "");
        assert.equal(JSON.parse(file("/etc/docker/daemon.json") || "{}")["no-new-privileges"], true, `${stack}/${name}: no-new-privileges`);
        assert.match(file("/usr/local/sbin/hm-metadata-block"), /-I DOCKER-USER 1 -d 169\.254\.169\.254\/32 -j REJECT/, `${stack}/${name}: metadata block`);
        assert.match(runcmd(doc), /systemctl enable --now hm-metadata-block\.service\niptables -w -C DOCKER-USER -d 169\.254\.169\.254\/32 -j REJECT\n/, `${stack}/${name}: metadata block enabled and checked`);
      }
    });

    test(`${stack}: public DNS records are not proxied by Cloudflare`, () => {
      for (const r of ofType(plan, RECORD)) {
        const i = r.inputs as Inputs;
        if (i.type === "A" || i.type === "AAAA" || i.type === "CNAME") assert.equal(i.proxied, false, `${stack}/${i.name}`);
      }
    });
  }
}
