import assert from "node:assert/strict";
import { test } from "node:test";
import { EXCEPTION_LABEL_PREFIX } from "../components/hardening";
import { parse } from "yaml";
import { DROPLET, firewallsOf, ofType, RECORD, runcmd } from "./support/cloud";
import { planToDisk, STACKS } from "./support/plan";

// Cross-cutting invariants over every resource of every stack file, planned by the real CLI.
type Inputs = Record<string, any>;
// The complete list of hardening exceptions. A new one must be added here, on purpose.
const EXPECTED_EXCEPTIONS: Record<string, string[]> = {
  coturn: ["cap-add.NET_BIND_SERVICE", "host-network"],
};

for (const stack of STACKS) {
  const plan = planToDisk(stack);
  const services = plan.resources.filter((r) => r.type === "docker:index/service:Service");

  // The hardening baseline itself is the policy pack's (policy/policies.ts, run over every plan by
  // test/policy.test.ts). What stays here: whether an input is secret (a policy cannot see it) and
  // this program's own conventions.
  test(`${stack}: no secret value in a service's env or labels; networks attached by id; tmpfs writable by the service's user`, () => {
    assert.ok(services.length >= 2, "no services planned");
    for (const r of services) {
      const s = r.inputs as Inputs;
      const who = `${stack}/${s.name}`;
      const c = s.taskSpec.containerSpec;
      for (const [key, value] of Object.entries(c.env ?? {})) assert.notEqual(value, "[secret]", `${who}: a secret value in env ${key}`);
      for (const l of s.labels ?? []) assert.notEqual(l.value, "[secret]", `${who}: a secret value in label ${l.label}`);
      // Attached by the network resources' ids: Swarm stores ids, so a name would differ on every plan.
      const onHost = s.taskSpec.networksAdvanceds.some((n: Inputs) => n.name === "host");
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

  test(`${stack}: only Traefik (and TURN, on its own ports) publish ports`, () => {
    const published = services.filter((r) => (r.inputs as Inputs).endpointSpec?.ports?.length).map((r) => (r.inputs as Inputs).name);
    for (const name of published) assert.ok(["traefik", "coturn"].includes(name), `${stack}: ${name} publishes ports`);
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

  // Protection is the pack's volume-protected; retainOnDelete is not sent to policies, so it is checked here.
  test(`${stack}: every volume is retained on delete`, () => {
    const volumes = plan.resources.filter((r) => r.type === "digitalocean:index/volume:Volume" || r.type === "docker:index/volume:Volume");
    assert.ok(volumes.length > 0);
    for (const v of volumes) assert.ok(v.options.retainOnDelete, `${stack}/${v.name}`);
  });

  const droplets = ofType(plan, DROPLET);
  if (droplets.length > 0) {
    // No forbidden inbound port: the pack's firewall-no-forbidden-port.
    test(`${stack}: every node has outbound rules`, () => {
      for (const d of droplets) {
        const name = (d.inputs as Inputs).name;
        const outbound = firewallsOf(plan, name).flatMap((f) => (f.inputs as Inputs).outboundRules as Inputs[]);
        assert.deepEqual([...new Set(outbound.map((r) => r.protocol))].sort(), ["icmp", "tcp", "udp"], `${stack}/${name}: outbound`);
      }
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
