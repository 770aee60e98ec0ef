import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { renderWireguardApplyScript, renderWireguardConfig, WG_CONF_PATH } from "../components/render/wireguard";
import { renderNodeLeaveScript, renderNodeTeardownProgram, renderSwarmInitScript, renderSwarmJoinScript, renderSwarmLabelScript } from "../components/render/swarm";
import { renderSecretFetchCreate } from "../components/platform/remote";
import { joinStdin } from "./support/meshPlan";

// The scripts' own logic (idempotence, what they change when), run by /bin/sh against stand-ins for
// systemctl, wg, ip and docker that record every call. The real engines judge them in the cluster
// harness; this pins down which commands run in which state.
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function sandbox(shims: Record<string, string>): { dir: string; run: (script: string) => { status: number; stdout: string; stderr: string; calls: string[] } } {
  const dir = mkdtempSync(path.join(tmpdir(), "hm-mesh-scripts-"));
  dirs.push(dir);
  mkdirSync(path.join(dir, "bin"));
  for (const [name, body] of Object.entries(shims)) {
    const file = path.join(dir, "bin", name);
    writeFileSync(file, `#!/bin/sh\nS=${dir}\necho "${name} $*" >>"$S/calls"\n${body}`);
    chmodSync(file, 0o755);
  }
  return {
    dir,
    run(script) {
      writeFileSync(path.join(dir, "calls"), "");
      const r = spawnSync("/bin/sh", ["-s"], { input: script, encoding: "utf8", env: { PATH: `${dir}/bin:/usr/bin:/bin` }, timeout: 20_000 });
      const calls = readFileSync(path.join(dir, "calls"), "utf8").split("\n").filter(Boolean);
      return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, calls };
    },
  };
}

// ---- wg0 -----------------------------------------------------------------------------------

const KEY = (c: string) => `${c.repeat(42)}A=`;
const peer = (name: string, ip: string) => ({ name, publicKey: KEY(name[0]!.toUpperCase()), presharedKey: KEY("p"), meshAddress: ip, endpoint: "10.111.0.9" });
const conf = (address: string, peers: ReturnType<typeof peer>[]) => renderWireguardConfig({ name: "n1", privateKey: KEY("k"), meshAddress: address, listenPort: 51820, peers });

const WG_SHIMS = {
  systemctl: `case $1 in is-active) test -f "$S/active" ;; start|restart) touch "$S/active" ;; esac\n`,
  // wg show wg0 allowed-ips: "<key>\\t<ip>/32" per peer of the installed file.
  wg: `if [ "$1" = show ]; then sed -n 's/^AllowedIPs = //p' "$S/etc/wg0.conf" | sed 's/^/key\t/'; fi\n`,
  "wg-quick": `cat "$2"\n`,
  ip: `case "$1 $2" in
  "-4 route") cat "$S/routes" 2>/dev/null || true ;;
  "route replace") grep -qx "\${3%/32}" "$S/routes" 2>/dev/null || echo "\${3%/32}" >>"$S/routes" ;;
  "route del") grep -vx "$3" "$S/routes" >"$S/routes.new" || true; mv "$S/routes.new" "$S/routes" ;;
esac\n`,
  chown: "",
};

function wgRun(box: ReturnType<typeof sandbox>, text: string) {
  const script = renderWireguardApplyScript(text).split("/etc/wireguard").join(`${box.dir}/etc`).split("/etc/systemd/system").join(`${box.dir}/systemd`);
  assert.doesNotMatch(script, /(^|[\s'"=(])\/etc\//m, "the test must not touch this machine's /etc");
  return box.run(script);
}

test("wg0 apply: first run installs 0600 and starts; a re-run changes nothing", () => {
  const box = sandbox(WG_SHIMS);
  const text = conf("10.77.0.1", [peer("b", "10.77.0.2")]);
  const first = wgRun(box, text);
  assert.equal(first.status, 0, first.stderr);
  assert.match(first.stdout, /^changed=1$/m);
  assert.deepEqual(first.calls.filter((c) => c.startsWith("systemctl")), ["systemctl daemon-reload", "systemctl enable wg-quick@wg0.service", "systemctl is-active --quiet wg-quick@wg0.service", "systemctl start wg-quick@wg0.service"]);
  assert.equal(readFileSync(`${box.dir}/etc/wg0.conf`, "utf8"), text);
  assert.equal(statSync(`${box.dir}/etc/wg0.conf`).mode & 0o777, 0o600);
  assert.equal(statSync(`${box.dir}/etc`).mode & 0o777, 0o700);
  // Docker starts after wg0 at boot (its swarm listens on the mesh address).
  assert.equal(readFileSync(`${box.dir}/systemd/docker.service.d/20-hardened-matrix-wg0.conf`, "utf8"), "[Unit]\nWants=wg-quick@wg0.service\nAfter=wg-quick@wg0.service\n");
  assert.ok(first.calls.includes("systemctl daemon-reload"));
  const again = wgRun(box, text);
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stdout, /^changed=0$/m);
  assert.ok(!again.calls.some((c) => /start|restart|syncconf|route (replace|del)|daemon-reload/.test(c)), again.calls.join("\n"));
  assert.equal(WG_CONF_PATH, "/etc/wireguard/wg0.conf");
});

test("wg0 apply: a new or removed peer is synced in place with its /32 route, without a restart", () => {
  const box = sandbox(WG_SHIMS);
  wgRun(box, conf("10.77.0.1", [peer("b", "10.77.0.2")]));
  writeFileSync(`${box.dir}/routes`, "10.77.0.2\n");
  const added = wgRun(box, conf("10.77.0.1", [peer("b", "10.77.0.2"), peer("c", "10.77.0.3")]));
  assert.equal(added.status, 0, added.stderr);
  assert.match(added.stdout, /^changed=1$/m);
  assert.ok(added.calls.some((c) => c.startsWith("wg syncconf wg0 ")));
  assert.ok(!added.calls.some((c) => /systemctl (re)?start/.test(c)));
  assert.deepEqual(readFileSync(`${box.dir}/routes`, "utf8").trim().split("\n").sort(), ["10.77.0.2", "10.77.0.3"]);
  const removed = wgRun(box, conf("10.77.0.1", [peer("c", "10.77.0.3")]));
  assert.equal(removed.status, 0, removed.stderr);
  assert.ok(removed.calls.includes("ip route del 10.77.0.2 dev wg0"), removed.calls.join("\n"));
  assert.deepEqual(readFileSync(`${box.dir}/routes`, "utf8").trim().split("\n"), ["10.77.0.3"]);
});

test("wg0 apply: a changed interface address restarts wg-quick@wg0", () => {
  const box = sandbox(WG_SHIMS);
  wgRun(box, conf("10.77.0.1", [peer("b", "10.77.0.2")]));
  const moved = wgRun(box, conf("10.77.0.9", [peer("b", "10.77.0.2")]));
  assert.equal(moved.status, 0, moved.stderr);
  assert.ok(moved.calls.includes("systemctl restart wg-quick@wg0.service"));
  assert.ok(!moved.calls.some((c) => c.startsWith("wg syncconf")));
});

// ---- swarm ---------------------------------------------------------------------------------

// A docker stand-in: state in files. info.<Field> holds `docker info` answers; nodes holds
// "ID HOSTNAME STATUS ROLE" lines; labels/<ID> holds "key=value" lines.
const DOCKER_SHIM = `
case "$1 $2" in
  "info --format") f=$(echo "$3" | sed 's/.*\\.Swarm\\.\\([A-Za-z]*\\).*/\\1/'); cat "$S/info.$f" ;;
  "swarm init") echo active >"$S/info.LocalNodeState"; echo true >"$S/info.ControlAvailable" ;;
  "swarm join") echo active >"$S/info.LocalNodeState" ;;
  "swarm join-token") [ -f "$S/token" ] && cat "$S/token" ;;
  "node ls") awk '{ print $1, $2, $3 }' "$S/nodes" ;;
  "node inspect")
    id=$5
    case "$4" in
      *Spec.Role*) awk -v i="$id" '$1 == i { print $4 }' "$S/nodes" ;;
      *Spec.Labels*) k=$(echo "$4" | sed 's/.*"\\(.*\\)".*/\\1/'); v=$(sed -n "s/^$k=//p" "$S/labels/$id" 2>/dev/null); echo "\${v:-<no value>}" ;;
    esac ;;
  "node update")
    shift 2
    while [ "$#" -gt 1 ]; do
      case $1 in
        --label-add) echo "$2" >>"$S/pending"; shift 2 ;;
        --label-rm) echo "-$2" >>"$S/pending"; shift 2 ;;
      esac
    done
    id=$1; touch "$S/labels/$id"
    while read -r l; do
      case $l in -*) grep -v "^\${l#-}=" "$S/labels/$id" >"$S/l.new" || true; mv "$S/l.new" "$S/labels/$id" ;; *) echo "$l" >>"$S/labels/$id" ;; esac
    done <"$S/pending"; rm -f "$S/pending" ;;
  "node demote") awk -v i="$3" '$1 == i { $4 = "worker" } { print }' "$S/nodes" >"$S/n.new"; mv "$S/n.new" "$S/nodes" ;;
  "node rm") awk -v i="$3" '$1 != i' "$S/nodes" >"$S/n.new"; mv "$S/n.new" "$S/nodes" ;;
esac
`;

function dockerBox(info: Record<string, string>) {
  // python3 is only used to probe the other managers' swarm port: "$S/listening.<ip>" means one answers.
  const box = sandbox({ docker: DOCKER_SHIM, python3: 'test -f "$S/listening.$3"\n' });
  mkdirSync(`${box.dir}/labels`);
  for (const [k, v] of Object.entries(info)) writeFileSync(`${box.dir}/info.${k}`, `${v}\n`);
  return box;
}

test("swarm init: only when inactive, on the mesh address; prints its node id and never a token; a re-run does not init", () => {
  const box = dockerBox({ LocalNodeState: "inactive", ControlAvailable: "false", NodeAddr: "10.77.0.1", NodeID: "id1" });
  const script = renderSwarmInitScript({ meshAddress: "10.77.0.1", addressPool: "10.20.0.0/16", otherManagers: ["10.77.0.2", "10.77.0.3"] });
  const first = box.run(script);
  assert.equal(first.status, 0, first.stderr);
  assert.ok(first.calls.includes("docker swarm init --advertise-addr 10.77.0.1 --listen-addr 10.77.0.1:2377 --data-path-addr 10.77.0.1 --default-addr-pool 10.20.0.0/16"));
  assert.equal(first.stdout, "node-id=id1\n");
  assert.ok(!first.calls.some((c) => c.includes("join-token")), "a command's output may reach deploy logs: the init never reads a token");
  const again = box.run(script);
  assert.equal(again.status, 0, again.stderr);
  assert.ok(!again.calls.some((c) => c.startsWith("docker swarm init")));
  assert.equal(again.stdout, first.stdout);
  writeFileSync(`${box.dir}/info.NodeAddr`, "10.111.0.5\n");
  const wrong = box.run(script);
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /advertises 10\.111\.0\.5, not the mesh address 10\.77\.0\.1/);
  writeFileSync(`${box.dir}/info.LocalNodeState`, "pending\n");
  assert.equal(box.run(script).status, 1);
});

test("swarm init: a replaced first manager never starts a second swarm while another manager runs one", () => {
  const box = dockerBox({ LocalNodeState: "inactive", ControlAvailable: "false", NodeAddr: "10.77.0.1", NodeID: "new1" });
  writeFileSync(`${box.dir}/listening.10.77.0.3`, "");
  const r = box.run(renderSwarmInitScript({ meshAddress: "10.77.0.1", addressPool: "10.20.0.0/16", otherManagers: ["10.77.0.2", "10.77.0.3"] }));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /a swarm already answers on 10\.77\.0\.3:2377/);
  assert.ok(!r.calls.some((c) => c.startsWith("docker swarm init")));
  assert.equal(r.stdout, "");
});

const TOKEN = "SWMTKN-1-0abc9digest-7secret";

test("swarm join: joins once over the mesh with the token sent ahead of the script; a joined node is not re-joined", () => {
  const box = dockerBox({ LocalNodeState: "inactive", NodeAddr: "10.77.0.2", NodeID: "id2" });
  const script = renderSwarmJoinScript({ meshAddress: "10.77.0.2", managerAddress: "10.77.0.1" });
  const first = box.run(joinStdin(TOKEN, script));
  assert.equal(first.status, 0, first.stderr);
  assert.deepEqual(first.calls.filter((c) => c.startsWith("docker swarm")), [
    `docker swarm join --advertise-addr 10.77.0.2 --listen-addr 10.77.0.2:2377 --data-path-addr 10.77.0.2 --token ${TOKEN} 10.77.0.1:2377`,
  ]);
  assert.equal(first.stdout, "node-id=id2\n");
  const again = box.run(joinStdin(TOKEN, script));
  assert.equal(again.status, 0, again.stderr);
  assert.ok(!again.calls.some((c) => c.startsWith("docker swarm")));
});

test("swarm join: refuses a missing, empty or malformed token before touching the engine", () => {
  const box = dockerBox({ LocalNodeState: "inactive", NodeAddr: "10.77.0.2", NodeID: "id2" });
  const script = renderSwarmJoinScript({ meshAddress: "10.77.0.2", managerAddress: "10.77.0.1" });
  const cases: Array<[string, RegExp]> = [
    [script, /no join token: send a line token=/],
    [joinStdin("", script), /no join token/],
    [joinStdin("abc-def", script), /not shaped SWMTKN-1-<digest>-<secret>/],
    [joinStdin("SWMTKN-1-onlydigest", script), /not shaped/],
    [`token='${TOKEN} x'\n${script}`, /characters other than \[A-Za-z0-9-\]/],
  ];
  for (const [stdin, why] of cases) {
    const r = box.run(stdin);
    assert.equal(r.status, 1, stdin.split("\n")[0]);
    assert.match(r.stderr, why);
    assert.deepEqual(r.calls, [], "nothing ran");
  }
});

// The join command's create program, as the deployer runs it (/bin/sh -c, the join script on stdin),
// against an ssh stand-in that behaves as ssh does with stdin: without -n it forwards all of it to
// the remote command. Remote commands run here, against the docker stand-in.
const SSH_SHIM = `
if env | grep -q '^hm_secret='; then echo "ssh got hm_secret in its environment" >&2; exit 255; fi
while [ "$#" -gt 0 ]; do
  case $1 in
    -o) shift 2 ;;
    -n) exec </dev/null; shift ;;
    root@*) host=\${1#root@}; shift; break ;;
    *) echo "unexpected ssh argument $1" >&2; exit 255 ;;
  esac
done
cat >"$S/stdin.$host"
sh -c "$*" <"$S/stdin.$host"
`;

function runCreate(box: ReturnType<typeof sandbox>, create: string, stdin: string) {
  writeFileSync(path.join(box.dir, "calls"), "");
  // A variable of that name in the deployer's environment must not carry the token into ssh's environment.
  const r = spawnSync("/bin/sh", ["-c", create], { input: stdin, encoding: "utf8", env: { PATH: `${box.dir}/bin:/usr/bin:/bin`, hm_secret: "inherited" }, timeout: 20_000 });
  const calls = readFileSync(path.join(box.dir, "calls"), "utf8").split("\n").filter(Boolean);
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, calls };
}

test("join command: reads the token on the manager, sends it ahead of the script; it is in no deployer argv and nothing prints it", () => {
  const box = sandbox({ docker: DOCKER_SHIM, ssh: SSH_SHIM });
  mkdirSync(`${box.dir}/labels`);
  for (const [k, v] of Object.entries({ LocalNodeState: "inactive", NodeAddr: "10.77.0.2", NodeID: "id2" })) writeFileSync(`${box.dir}/info.${k}`, `${v}\n`);
  writeFileSync(`${box.dir}/token`, `${TOKEN}\n`);
  const script = renderSwarmJoinScript({ meshAddress: "10.77.0.2", managerAddress: "10.77.0.1" });
  const create = renderSecretFetchCreate({ sourceAddress: "100.64.0.1", sourceCommand: "docker swarm join-token -q worker", nodeAddress: "100.64.0.2", variable: "token" });
  assert.ok(!create.includes("SWMTKN"));
  const r = runCreate(box, create, script);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, "node-id=id2\n", "the command prints the node id only");
  assert.ok(!r.stderr.includes(TOKEN));
  assert.equal(readFileSync(`${box.dir}/stdin.100.64.0.1`, "utf8"), "", "the manager's ssh reads no stdin (it would swallow the script)");
  assert.equal(readFileSync(`${box.dir}/stdin.100.64.0.2`, "utf8"), joinStdin(TOKEN, script), "the node gets the token line, then the script");
  const ssh = r.calls.filter((c) => c.startsWith("ssh "));
  assert.equal(ssh.length, 2);
  assert.match(ssh[0]!, / -n root@100\.64\.0\.1 docker swarm join-token -q worker$/);
  assert.match(ssh[1]!, / root@100\.64\.0\.2 timeout 300 sh -s$/);
  for (const c of ssh) assert.ok(!c.includes(TOKEN), `the token is in a deployer argv: ${c}`);
  assert.ok(r.calls.includes(`docker swarm join --advertise-addr 10.77.0.2 --listen-addr 10.77.0.2:2377 --data-path-addr 10.77.0.2 --token ${TOKEN} 10.77.0.1:2377`));
});

test("join command: a manager that prints no token, or something that is not one, stops it before the node is reached", () => {
  const box = sandbox({ docker: DOCKER_SHIM, ssh: SSH_SHIM });
  const create = renderSecretFetchCreate({ sourceAddress: "100.64.0.1", sourceCommand: "docker swarm join-token -q worker", nodeAddress: "100.64.0.2", variable: "token" });
  for (const printed of [undefined, "", "$(touch pwned)\n", `${TOKEN}\n${TOKEN}\n`]) {
    if (printed === undefined) rmSync(`${box.dir}/token`, { force: true });
    else writeFileSync(`${box.dir}/token`, printed);
    const r = runCreate(box, create, "echo reached\n");
    assert.notEqual(r.status, 0, JSON.stringify(printed));
    assert.match(r.stderr, printed === undefined ? /'docker swarm join-token -q worker' failed on 100\.64\.0\.1/ : /'docker swarm join-token -q worker' on 100\.64\.0\.1 printed no single plain value/);
    assert.ok(!r.calls.some((c) => c.includes("100.64.0.2")), "the node is never reached");
    assert.equal(r.stdout, "");
  }
  assert.throws(() => renderSecretFetchCreate({ sourceAddress: "100.64.0.1", sourceCommand: "cat $(x)", nodeAddress: "100.64.0.2", variable: "token" }), /plain words/);
});

test("swarm labels: labels by node id, removes stale labels and dead predecessors; a re-run changes nothing", () => {
  const box = dockerBox({});
  writeFileSync(`${box.dir}/nodes`, ["old1 n1 Down manager", "id1 n1 Ready manager", "id2 n2 Ready manager", "old3 n3 Disconnected worker", "id3 n3 Ready worker", ""].join("\n"));
  writeFileSync(`${box.dir}/labels/id3`, "hardened-matrix.role.db=true\n");
  const owned = ["manager", "edge", "db", "turn"].map((r) => `hardened-matrix.role.${r}`);
  const script = renderSwarmLabelScript({
    ownedLabels: owned,
    nodes: [
      { hostname: "n1", labels: ["hardened-matrix.role.manager", "hardened-matrix.role.edge"] },
      { hostname: "n2", labels: ["hardened-matrix.role.manager", "hardened-matrix.role.db"] },
      { hostname: "n3", labels: [] },
    ],
  });
  const first = box.run(script);
  assert.equal(first.status, 0, first.stderr);
  assert.equal(first.stdout, "labelled=3\nremoved=2\n");
  assert.ok(first.calls.indexOf("docker node demote old1") >= 0 && first.calls.indexOf("docker node demote old1") < first.calls.indexOf("docker node rm old1"));
  assert.ok(first.calls.includes("docker node update --label-add hardened-matrix.role.manager=true --label-add hardened-matrix.role.edge=true id1"));
  assert.ok(first.calls.includes("docker node update --label-rm hardened-matrix.role.db id3"));
  assert.deepEqual(readFileSync(`${box.dir}/labels/id2`, "utf8").trim().split("\n").sort(), ["hardened-matrix.role.db=true", "hardened-matrix.role.manager=true"]);
  const again = box.run(script);
  assert.equal(again.status, 0, again.stderr);
  assert.equal(again.stdout, "labelled=0\nremoved=0\n");
  assert.ok(!again.calls.some((c) => /node (update|rm|demote)/.test(c)), again.calls.join("\n"));
  // The replacement is not Ready yet: its predecessor stays until it is.
  writeFileSync(`${box.dir}/nodes`, "id1 n1 Ready manager\nid2 n2 Ready manager\nold9 n3 Down worker\n");
  const missing = box.run(script);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /no Ready swarm node is called n3/);
  assert.ok(!missing.calls.some((c) => /node (rm|demote)/.test(c)));
});

// ---- teardown ------------------------------------------------------------------------------

/** A node as the leave script sees it: `docker` answers from files, systemctl/umount/mountpoint/sleep record only. */
function leaveBox(state: { swarm: string; manager: string; tasks: string; mounted: string[] }) {
  const box = sandbox({
    docker: `case "$*" in
  "info --format {{.Swarm.LocalNodeState}}") echo ${state.swarm} ;;
  "info --format {{.Swarm.ControlAvailable}}") echo ${state.manager} ;;
  "ps -q --filter label=com.docker.swarm.task.id") printf '%s' "${state.tasks}" ;;
  "ps --filter"*) echo task-name ;;
  "swarm leave"*) ;;
  *) echo "unexpected docker $*" >&2; exit 9 ;;
esac`,
    systemctl: "",
    umount: "",
    sleep: "",
    mountpoint: `case " ${state.mounted.join(" ")} " in *" $2 "*) exit 0 ;; *) exit 1 ;; esac`,
  });
  return box;
}

test("node leave: once its tasks are gone and it is demoted it leaves, then the engine stops, then the mounted volumes are unmounted, then wg0 stops", () => {
  const box = leaveBox({ swarm: "active", manager: "false", tasks: "", mounted: ["/mnt/hm-x-postgres"] });
  const r = box.run(renderNodeLeaveScript({ mountPoints: ["/mnt/hm-x-postgres", "/mnt/hm-x-dendrite"], lastManager: false }));
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, "left=1\n");
  const at = (c: string) => r.calls.indexOf(c);
  assert.ok(at("docker swarm leave") >= 0, r.calls.join("\n"));
  assert.ok(at("docker swarm leave") < at("systemctl stop docker.service") && at("systemctl stop docker.service") < at("umount /mnt/hm-x-postgres"), r.calls.join("\n"));
  assert.ok(at("umount /mnt/hm-x-postgres") < at("systemctl stop wg-quick@wg0.service"));
  assert.ok(!r.calls.includes("umount /mnt/hm-x-dendrite"), "a volume that is not mounted is left alone");
});

test("node leave: refuses, unmounting nothing, while swarm tasks still run after the wait, or while it is still a manager", () => {
  for (const [state, message] of [
    [{ swarm: "active", manager: "false", tasks: "abc\n", mounted: ["/mnt/v"] }, /swarm tasks still run here/],
    [{ swarm: "active", manager: "true", tasks: "", mounted: ["/mnt/v"] }, /still a manager/],
  ] as const) {
    const box = leaveBox({ ...state, mounted: [...state.mounted] });
    const r = box.run(renderNodeLeaveScript({ mountPoints: ["/mnt/v"], lastManager: false }));
    assert.equal(r.status, 1);
    assert.match(r.stderr, message);
    assert.ok(!r.calls.some((c) => /^(umount|systemctl stop|docker swarm leave)/.test(c)), r.calls.join("\n"));
  }
  // The only manager: nothing drained it; it leaves with --force (the swarm ends with it).
  const alone = leaveBox({ swarm: "active", manager: "true", tasks: "abc\n", mounted: [] }).run(renderNodeLeaveScript({ mountPoints: [], lastManager: true }));
  assert.equal(alone.status, 0, alone.stderr);
  assert.ok(alone.calls.includes("docker swarm leave --force"));
  // An engine that does not answer (an interrupted teardown, retried): the volumes are still released.
  const stopped = sandbox({ docker: "exit 1", systemctl: "", umount: "", sleep: "", mountpoint: "exit 0" }).run(renderNodeLeaveScript({ mountPoints: ["/mnt/v"], lastManager: false }));
  assert.equal(stopped.status, 0, stopped.stderr);
  assert.match(stopped.stderr, /the engine does not answer/);
  assert.ok(stopped.calls.includes("umount /mnt/v") && !stopped.calls.some((c) => c.startsWith("docker swarm")), stopped.calls.join("\n"));
  assert.throws(() => renderNodeLeaveScript({ mountPoints: ["/etc"], lastManager: false }), /not \/mnt\/<name>/);
});

/** The deployer: `ssh` records where it went and answers per host from files (exit 255 for a dead host). */
function deployerBox(hosts: Record<string, { manager?: boolean; exit?: number }>) {
  const cases = Object.entries(hosts)
    .map(([h, o]) => `  ${h}) ${o.exit === 255 ? "exit 255" : `case "$*" in *ControlAvailable*) echo ${o.manager ? "true" : "false"} ;; *) cat >/dev/null; exit ${o.exit ?? 0} ;; esac`} ;;`)
    .join("\n");
  return sandbox({
    ssh: `while [ $# -gt 0 ]; do case $1 in -o) shift 2 ;; -n) shift ;; root@*) h=\${1#root@}; shift; break ;; esac; done
echo "to $h" >>"$S/calls"
case $h in
${cases}
  *) exit 255 ;;
esac`,
  });
}

const teardown = (managers: string[]) =>
  renderNodeTeardownProgram({ hostname: "n2", nodeAddress: "100.64.0.2", managerAddresses: managers, mountPoints: ["/mnt/v"], ssh: "ssh -o BatchMode=yes", timeoutSeconds: 300 });

test("teardown program: on the first manager that answers, drain; on the node, leave; on that manager, remove", () => {
  const r = deployerBox({ "100.64.0.1": { manager: false }, "100.64.0.3": { manager: true }, "100.64.0.2": {} }).run(teardown(["100.64.0.1", "100.64.0.3"]));
  assert.equal(r.status, 0, r.stderr);
  const hops = r.calls.filter((c) => c.startsWith("to "));
  assert.deepEqual(hops, ["to 100.64.0.1", "to 100.64.0.3", "to 100.64.0.3", "to 100.64.0.2", "to 100.64.0.3"], "probe, probe, drain, leave, remove");
});

test("teardown program: a dead node is said and skipped; no manager answering stops it before anything is done", () => {
  const dead = deployerBox({ "100.64.0.1": { manager: true }, "100.64.0.2": { exit: 255 } }).run(teardown(["100.64.0.1"]));
  assert.equal(dead.status, 0, dead.stderr);
  assert.match(dead.stderr, /does not answer ssh: treated as dead/);
  assert.deepEqual(dead.calls.filter((c) => c.startsWith("to ")), ["to 100.64.0.1", "to 100.64.0.1", "to 100.64.0.2", "to 100.64.0.1"]);
  const failing = deployerBox({ "100.64.0.1": { manager: true }, "100.64.0.2": { exit: 1 } }).run(teardown(["100.64.0.1"]));
  assert.equal(failing.status, 1);
  assert.match(failing.stderr, /leaving failed \(exit 1\); the node keeps its volumes/);
  assert.deepEqual(failing.calls.filter((c) => c.startsWith("to ")), ["to 100.64.0.1", "to 100.64.0.1", "to 100.64.0.2"], "not removed from the swarm");
  const none = deployerBox({ "100.64.0.1": { manager: false }, "100.64.0.2": {} }).run(teardown(["100.64.0.1", "100.64.0.9"]));
  assert.equal(none.status, 1);
  assert.match(none.stderr, /no other manager answers \(tried 100.64.0.1 100.64.0.9\); nothing done/);
  assert.ok(!none.calls.includes("to 100.64.0.2"), "the node is never reached");
  assert.throws(() => teardown(["100.64.0.2"]), /its own surviving manager/);
});
