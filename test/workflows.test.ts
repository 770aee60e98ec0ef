import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { parse, stringify } from "yaml";
import { builtEngine } from "./engine/harness";
import { ROOT } from "./support/plan";
import { findTool, skipReason } from "./support/realTool";

// The GitHub workflows: schema-valid (action-validator, the SchemaStore workflow schema compiled
// to WASM, offline), least privilege, every action pinned to a commit, no secret near fork code.

type Doc = Record<string, any>;
const DIR = path.join(ROOT, ".github/workflows");
const VALIDATOR = path.join(ROOT, "node_modules/.bin/action-validator");
const files = readdirSync(DIR).filter((f) => f.endsWith(".yml")).sort();
const text = (f: string) => readFileSync(path.join(DIR, f), "utf8");
const doc = (f: string) => parse(text(f)) as Doc;
const jobs = (f: string) => Object.entries(doc(f).jobs as Record<string, Doc>);

/**
 * The pins, checked against each action's repository (git tag → commit, in a mirror of the repo):
 * actions/checkout v7.0.1, actions/setup-node v7.0.0, actions/upload-artifact v7.0.0,
 * actions/cache v5.0.5 (the newest tag of github.com/actions/cache; action.yml has path, key),
 * pulumi/actions v7.0.0 (the current major; action.yml has command, stack-name, policyPacks,
 * comment-on-pr, cloud-url, secrets-provider), tailscale/github-action v4.1.3.
 */
const PINS: Record<string, [string, string]> = {
  "actions/checkout": ["3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1"],
  "actions/setup-node": ["820762786026740c76f36085b0efc47a31fe5020", "v7.0.0"],
  "actions/upload-artifact": ["bbbca2ddaa5d8feaa63e36b76fdaad77386f024f", "v7.0.0"],
  "actions/cache": ["27d5ce7f107fe9357f9df03efb73ab90386fccae", "v5.0.5"],
  "pulumi/actions": ["8e5e406f4007fca908480587cb9893c07090f58d", "v7.0.0"],
  "tailscale/github-action": ["780049a30b6ff5c378a9e7b389d15ece7a204888", "v4.1.3"],
};

function validate(file: string): { status: number; out: string } {
  const r = spawnSync(VALIDATOR, [file], { encoding: "utf8", timeout: 60_000 });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

test("the four workflows are there", () => {
  assert.deepEqual(files, ["ci.yml", "deploy.yml", "plan-comment.yml", "preview.yml"]);
});

for (const f of files) {
  test(`${f}: valid against the GitHub workflow schema`, () => {
    const r = validate(path.join(DIR, f));
    assert.equal(r.status, 0, r.out);
  });
}

test("the schema check can fail: a misspelled key and a bad permission are refused", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "hm-wf-"));
  const bad = path.join(dir, "bad.yml");
  writeFileSync(bad, "name: x\non: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    stepz:\n      - run: echo\n");
  assert.notEqual(validate(bad).status, 0);
  writeFileSync(bad, "name: x\non: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    permissions:\n      contents: sometimes\n    steps:\n      - run: echo\n");
  assert.notEqual(validate(bad).status, 0);
});

test("least privilege: no default token rights, explicit permissions on every job, write only where a comment is posted", () => {
  const writers: Record<string, string[]> = { "preview.yml": ["preview"], "plan-comment.yml": ["comment"] };
  for (const f of files) {
    assert.deepEqual(doc(f).permissions, {}, `${f}: top-level permissions must be {}`);
    for (const [name, job] of jobs(f)) {
      assert.equal(typeof job.permissions, "object", `${f}/${name}: no explicit permissions`);
      for (const [scope, level] of Object.entries(job.permissions as Record<string, string>)) {
        if (level === "write") {
          assert.ok((writers[f] ?? []).includes(name), `${f}/${name}: ${scope}: write`);
          assert.equal(scope, "pull-requests", `${f}/${name}: only pull-requests may be written`);
        } else assert.ok(level === "read" || level === "none", `${f}/${name}: ${scope}: ${level}`);
      }
    }
  }
});

test("every action is pinned to a full commit SHA with its version in a comment, and the pins agree", () => {
  let count = 0;
  for (const f of files) {
    for (const line of text(f).split("\n")) {
      const m = /^\s*(?:-\s+)?uses:\s*(\S+?)@(\S+)(?:\s+#\s*(\S+))?\s*$/.exec(line);
      if (!/^\s*(?:-\s+)?uses:/.test(line)) continue;
      assert.ok(m, `${f}: unreadable uses line: ${line}`);
      const [, action, ref, comment] = m;
      assert.match(ref!, /^[0-9a-f]{40}$/, `${f}: ${action} is not pinned to a commit`);
      const pin = PINS[action!];
      assert.ok(pin, `${f}: ${action} is not a checked action`);
      assert.deepEqual([ref, comment], pin, `${f}: ${action}`);
      count++;
    }
  }
  assert.ok(count >= 15, `only ${count} uses lines found`);
});

test("forks: no pull_request_target; pull-request jobs with secrets run only for this repository's branches; the fork job has none", () => {
  for (const f of files) assert.ok(!("pull_request_target" in (doc(f).on as Doc)), `${f}: pull_request_target`);
  for (const f of files.filter((x) => "pull_request" in (doc(x).on as Doc))) {
    for (const [name, job] of jobs(f)) {
      const usesSecrets = /secrets\./.test(JSON.stringify(job));
      if (!usesSecrets) continue;
      if (f === "ci.yml") assert.fail(`ci.yml/${name} uses a secret`);
      assert.match(String(job.if), /^github\.event\.pull_request\.head\.repo\.full_name == github\.repository$/, `${f}/${name}: secrets without the same-repository guard`);
    }
  }
  const fork = doc("preview.yml").jobs["offline-plan"] as Doc;
  assert.equal(fork.if, "github.event.pull_request.head.repo.full_name != github.repository");
  assert.doesNotMatch(JSON.stringify(fork), /secrets\./);
  assert.deepEqual(fork.permissions, { contents: "read" });
});

test("the privileged half of the fork flow runs no pull request code and interpolates nothing into its script", () => {
  const w = doc("plan-comment.yml");
  assert.deepEqual(Object.keys(w.on), ["workflow_run"]);
  for (const [, job] of jobs("plan-comment.yml")) {
    for (const step of job.steps as Doc[]) {
      assert.equal(step.uses, undefined, "no action (no checkout) in the workflow_run job");
      assert.doesNotMatch(String(step.run), /\$\{\{/, "values reach the script through env only");
      assert.doesNotMatch(String(step.run), /\bnpm\b|\bnode\b|\bsh\s+result|bash\s+result|source\s/, "nothing from the artifact is executed");
      assert.doesNotMatch(JSON.stringify(step.env ?? {}), /head_branch|pull_requests|display_title/, "no attacker-named field");
    }
  }
});

test("every checkout keeps no credentials; no run script interpolates event data directly", () => {
  for (const f of files) {
    for (const [name, job] of jobs(f)) {
      for (const step of (job.steps ?? []) as Doc[]) {
        if (String(step.uses ?? "").startsWith("actions/checkout@")) assert.equal(step.with?.["persist-credentials"], false, `${f}/${name}`);
        if (step.run) assert.doesNotMatch(String(step.run), /\$\{\{\s*github\.event\./, `${f}/${name}: event data in a script`);
      }
    }
  }
});

test("preview: per cloud stack, pulumi preview with the policy pack, commented on the PR, backend and secrets provider from secrets", () => {
  const job = doc("preview.yml").jobs.preview as Doc;
  assert.deepEqual(job.strategy.matrix.stack, ["dev", "prod"]);
  const step = (job.steps as Doc[]).find((s) => String(s.uses).startsWith("pulumi/actions@"))!;
  assert.equal(step.with.command, "preview");
  assert.equal(step.with["stack-name"], "${{ matrix.stack }}");
  assert.equal(step.with.policyPacks, "${{ github.workspace }}/policy");
  assert.equal(step.with["comment-on-pr"], true);
  assert.equal(step.with.refresh, undefined, "no --refresh: a refresh would read the Docker host over SSH");
  assert.equal(step.with["cloud-url"], "${{ secrets.PULUMI_BACKEND_URL }}");
  assert.equal(step.with["secrets-provider"], "${{ secrets.PULUMI_SECRETS_PROVIDER }}");
  assert.equal(step.env.PULUMI_CONFIG_PASSPHRASE, "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}");
  assert.ok((job.steps as Doc[]).some((s) => /npm ci --prefix policy/.test(String(s.run))), "the pack's dependencies are installed");
});

/** The environments a job names, its matrix expanded. */
function environmentsOf(job: Doc): string[] {
  const env = typeof job.environment === "object" && job.environment !== null ? job.environment.name : job.environment;
  if (env === undefined) return [];
  const m = /^\$\{\{\s*matrix\.(\w+)\s*\}\}(.*)$/.exec(String(env));
  if (!m) return [String(env)];
  return ((job.strategy?.matrix?.[m[1]!] ?? []) as string[]).map((v) => `${v}${m[2]}`);
}

const DEPLOY_ENVIRONMENTS = ["dev", "prod"];
const PREVIEW_ENVIRONMENTS = ["dev-preview", "prod-preview"];

test("credentials only from environments: every job reading a secret names one; pull requests get only the preview environments, deploy environments only the deploy", () => {
  let readers = 0;
  for (const f of files) {
    const on = Object.keys(doc(f).on as Doc);
    for (const [name, job] of jobs(f)) {
      if (!/secrets\./.test(JSON.stringify(job))) continue;
      readers++;
      const envs = environmentsOf(job);
      assert.ok(envs.length > 0, `${f}/${name} reads secrets outside an environment (repository secrets reach every branch pusher)`);
      for (const e of envs) assert.ok([...DEPLOY_ENVIRONMENTS, ...PREVIEW_ENVIRONMENTS].includes(e), `${f}/${name}: unknown environment ${e}`);
      if (on.includes("pull_request")) {
        for (const e of envs) assert.ok(PREVIEW_ENVIRONMENTS.includes(e), `${f}/${name}: a pull request's code in environment ${e}`);
      }
      if (envs.some((e) => DEPLOY_ENVIRONMENTS.includes(e))) assert.deepEqual(on, ["workflow_run"], `${f}/${name}: a deploy environment on ${on.join(", ")}`);
    }
  }
  assert.equal(readers, 3, "preview, deploy dev, deploy prod");
  assert.deepEqual(environmentsOf(doc("preview.yml").jobs.preview as Doc), PREVIEW_ENVIRONMENTS);
});

test("no pull request joins the tailnet: a preview needs no path to the nodes, and no tailnet client is within a PR's reach", () => {
  for (const f of files.filter((x) => "pull_request" in (doc(x).on as Doc))) {
    assert.doesNotMatch(text(f).replace(/^\s*#.*$/gm, ""), /tailscale\/github-action|TS_OAUTH_/, `${f}: tailnet join or its OAuth client`);
  }
  // The deploys still join: the docker provider and remote steps reach the nodes over it.
  for (const [, job] of jobs("deploy.yml")) assert.ok((job.steps as Doc[]).some((s) => String(s.uses).startsWith("tailscale/github-action@")));
});

test("deploy: only after CI passed on a push to this repository's main, of the commit CI tested; no manual trigger", () => {
  const w = doc("deploy.yml");
  assert.deepEqual(Object.keys(w.on), ["workflow_run"], "no push (untested code) and no workflow_dispatch (any branch)");
  assert.deepEqual(w.on.workflow_run, { workflows: [doc("ci.yml").name], types: ["completed"], branches: ["main"] });
  const { dev, prod } = w.jobs as Record<string, Doc>;
  const guard = String(dev.if).split("&&").map((c) => c.trim()).sort();
  assert.deepEqual(guard, [
    "github.event.workflow_run.conclusion == 'success'",
    "github.event.workflow_run.event == 'push'",
    "github.event.workflow_run.head_branch == 'main'",
    "github.event.workflow_run.head_repository.full_name == github.repository",
  ]);
  // prod needs dev, so a skipped dev skips it; an always()/failure() would undo that.
  assert.equal(prod.needs, "dev");
  assert.doesNotMatch(String(prod.if ?? ""), /always\(|failure\(|cancelled\(/);
  for (const job of [dev, prod]) {
    const checkout = (job.steps as Doc[]).find((s) => String(s.uses).startsWith("actions/checkout@"))!;
    assert.equal(checkout.with.ref, "${{ github.event.workflow_run.head_sha }}", "the commit CI tested, not main's newest");
  }
  // A tag's CI run carries the tag's name as head_branch: CI runs on branches only.
  assert.deepEqual(doc("ci.yml").on.push, { branches: ["**"] });
});

test("deploy: dev first, prod behind its environment; one deploy per stack, never cancelled", () => {
  const { dev, prod } = doc("deploy.yml").jobs as Record<string, Doc>;
  assert.equal(prod.needs, "dev");
  for (const [stack, job] of [["dev", dev], ["prod", prod]] as const) {
    assert.equal(job.environment, stack);
    assert.deepEqual(job.concurrency, { group: `deploy-${stack}`, "cancel-in-progress": false });
    const up = (job.steps as Doc[]).find((s) => String(s.uses).startsWith("pulumi/actions@"))!;
    assert.deepEqual([up.with.command, up.with["stack-name"], up.with.policyPacks], ["up", stack, "${{ github.workspace }}/policy"]);
  }
});

test("ci: every branch push and pull request runs .ci/run", () => {
  const w = doc("ci.yml");
  assert.deepEqual(Object.keys(w.on).sort(), ["pull_request", "push"]);
  assert.equal((w.jobs.test.steps as Doc[]).at(-1)!.run, ".ci/run");
});

const shellcheck = findTool("shellcheck", "shellcheck");
test("every run script passes shellcheck as the bash GitHub runs it (-eo pipefail)", { skip: shellcheck ? false : skipReason("shellcheck", "shellcheck") }, () => {
  let count = 0;
  for (const f of files) {
    for (const [name, job] of jobs(f)) {
      for (const step of (job.steps ?? []) as Doc[]) {
        if (!step.run) continue;
        const r = spawnSync(shellcheck!, ["-s", "bash", "-"], { input: `#!/bin/bash\nset -eo pipefail\n${step.run}`, encoding: "utf8" });
        assert.equal(r.status, 0, `${f}/${name}:\n${r.stdout}`);
        count++;
      }
    }
  }
  assert.ok(count >= 6);
  const broken = spawnSync(shellcheck!, ["-s", "bash", "-"], { input: "#!/bin/bash\ncd $DIR\n", encoding: "utf8" });
  assert.notEqual(broken.status, 0, "shellcheck flags an unquoted variable");
});

/**
 * Runs a deploy job's steps in order as a runner would, up to the first failure: `if:` and `${{ }}`
 * evaluated (only the forms the deploy uses: `secrets.X`/`env.X`/'literal' compared with == or !=,
 * joined by &&; anything else throws), run steps executed by bash as GitHub runs them
 * (`bash --noprofile --norc -eo pipefail`) in `workspace`, actions recorded, not run. `npm ci` is
 * taken as done (the workspace links this repository's node_modules).
 */
function runDeployJob(job: Doc, secrets: Record<string, string>, workspace: string): { reached: string[]; failed?: string; output: string } {
  const operand = (o: string, env: Record<string, string>): string => {
    const t = o.trim();
    let m: RegExpExecArray | null;
    if ((m = /^'([^']*)'$/.exec(t))) return m[1]!;
    if ((m = /^secrets\.(\w+)$/.exec(t))) return secrets[m[1]!] ?? ""; // an unset secret is ''
    if ((m = /^env\.(\w+)$/.exec(t))) return env[m[1]!] ?? "";
    throw new Error(`unsupported operand: ${t}`);
  };
  const evaluate = (expr: string, env: Record<string, string>): string => {
    const e = expr.trim().replace(/^\$\{\{([\s\S]*)\}\}$/, "$1").trim();
    if (!/==|!=/.test(e)) return operand(e, env);
    const terms = e.split("&&").map((term) => {
      const m = /^(.+?)\s*(==|!=)\s*(.+)$/.exec(term.trim());
      if (!m) throw new Error(`unsupported expression: ${term}`);
      return (operand(m[1]!, env) === operand(m[3]!, env)) === (m[2] === "==");
    });
    return String(terms.every(Boolean));
  };
  const interpolate = (v: string, env: Record<string, string>) => v.replace(/\$\{\{[\s\S]*?\}\}/g, (x) => evaluate(x, env));
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries((job.env ?? {}) as Record<string, string>)) env[k] = interpolate(String(v), env);
  const reached: string[] = [];
  let output = "";
  for (const step of job.steps as Doc[]) {
    const label = String(step.name ?? step.uses ?? step.run).split("\n")[0]!;
    if (step.if !== undefined && evaluate(String(step.if), env) !== "true") continue;
    reached.push(label);
    if (step.uses || /^npm ci /.test(String(step.run))) continue;
    const stepEnv = Object.fromEntries(Object.entries((step.env ?? {}) as Record<string, string>).map(([k, v]) => [k, interpolate(String(v), env)]));
    const r = spawnSync("bash", ["--noprofile", "--norc", "-eo", "pipefail", "-c", String(step.run)], {
      cwd: workspace,
      env: { PATH: process.env.PATH, ...env, ...stepEnv },
      encoding: "utf8",
      timeout: 30_000,
    });
    output += `${r.stdout}${r.stderr}`;
    if (r.status !== 0) return { reached, failed: label, output };
  }
  return { reached, output };
}

test("deploy: without the tailnet client or a stack that lets the runner in, the job stops before pulumi up, with a clear message", () => {
  const { dev, prod } = doc("deploy.yml").jobs as Record<string, Doc>;
  const both = { TS_OAUTH_CLIENT_ID: "client", TS_OAUTH_SECRET: "secret" };
  for (const [stack, job] of [["dev", dev], ["prod", prod]] as const) {
    const workspace = mkdtempSync(path.join(tmpdir(), "hm-deploy-"));
    symlinkSync(path.join(ROOT, "node_modules"), path.join(workspace, "node_modules"));
    const stackFile = path.join(workspace, `Pulumi.${stack}.yaml`);
    const withTag = (tag: string | undefined) => {
      const config = parse(readFileSync(path.join(ROOT, `Pulumi.${stack}.yaml`), "utf8")) as Doc;
      if (tag === undefined) delete config.config["hardened-matrix:deployerTag"];
      else config.config["hardened-matrix:deployerTag"] = tag;
      writeFileSync(stackFile, stringify(config));
    };
    const up = (r: { reached: string[] }) => r.reached.some((s) => s.startsWith("pulumi/actions@"));
    withTag("tag:hm-ci");

    for (const secrets of [{}, { TS_OAUTH_CLIENT_ID: "client" }, { TS_OAUTH_SECRET: "secret" }] as Array<Record<string, string>>) {
      const r = runDeployJob(job, secrets, workspace);
      assert.equal(r.failed, "Require the tailnet client", `${stack} ${JSON.stringify(secrets)}: ${JSON.stringify(r)}`);
      assert.deepEqual(r.reached, ["Require the tailnet client"], "stops before checkout, long before pulumi up");
      assert.match(r.output, /^::error title=No tailnet client::TS_OAUTH_CLIENT_ID and TS_OAUTH_SECRET must be set/m);
    }

    for (const tag of [undefined, "tag:other"]) {
      withTag(tag);
      const r = runDeployJob(job, both, workspace);
      assert.equal(r.failed, "Require the stack to let this runner in", `${stack} deployerTag ${tag}: ${JSON.stringify(r)}`);
      assert.ok(!up(r) && !r.reached.some((s) => s.startsWith("tailscale/github-action@")), JSON.stringify(r.reached));
      assert.match(r.output, new RegExp(`^::error title=Runner not let in::Pulumi\\.${stack}\\.yaml sets hardened-matrix:deployerTag to "${tag ?? ""}", not tag:hm-ci`, "m"));
    }

    // Everything in place: the runner joins with the tag the stack lets in, then pulumi up runs.
    withTag("tag:hm-ci");
    const ok = runDeployJob(job, both, workspace);
    assert.equal(ok.failed, undefined, JSON.stringify(ok));
    assert.ok(up(ok), JSON.stringify(ok.reached));
    const join = (job.steps as Doc[]).find((s) => String(s.uses).startsWith("tailscale/github-action@"))!;
    assert.equal(join.if, undefined, "the join is never skipped");
    assert.equal(join.with.tags, "${{ env.DEPLOYER_TAG }}");
    assert.equal(job.env.DEPLOYER_TAG, "tag:hm-ci");
  }
});


const forkJob = () => doc("preview.yml").jobs["offline-plan"] as Doc;
const ENGINE_STEP = "Pulumi's own preview of head against base, over the simulated cloud";

test("fork PRs: the engine build is cached by build-engine.sh's content (binary and stamp only), before the engine runs", () => {
  const steps = forkJob().steps as Doc[];
  const cacheAt = steps.findIndex((s) => String(s.uses).startsWith("actions/cache@"));
  const engineAt = steps.findIndex((s) => s.name === ENGINE_STEP);
  assert.ok(cacheAt >= 0 && engineAt > cacheAt, "a cache step before the engine step");
  const cache = steps[cacheAt]!;
  assert.equal(cache.with.key, "pulumi-engine-${{ runner.os }}-${{ hashFiles('base/test/engine/build-engine.sh', 'head/test/engine/build-engine.sh') }}");
  // What build-engine.sh checks before reusing a build: the stamp and the binary (not the 3 GiB of Go caches).
  assert.deepEqual(String(cache.with.path).trim().split("\n"), ["~/.cache/hardened-matrix/pulumi-*/bin", "~/.cache/hardened-matrix/pulumi-*/stamp"]);
  const script = readFileSync(path.join(ROOT, "test/engine/build-engine.sh"), "utf8");
  assert.match(script, /hardened-matrix\/pulumi-\$version\}/, "the script's default cache is ~/.cache/hardened-matrix/pulumi-VERSION");
  assert.match(script, /-f "\$stamp" \] && \[ "\$\(cat "\$stamp"\)" = "\$want" \] && \[ -x "\$bin\/pulumi" \]/, "reuse needs only the stamp and bin/pulumi");
  // The engine step: base deployed, head previewed with its markdown; all in the job without secrets or write rights.
  const run = String(steps[engineAt]!.run);
  assert.match(run, /\(cd base && npm run --silent engine -- up --stack "\$stack" --dir "\$dir"/);
  assert.match(run, /\(cd head && npm run --silent engine -- preview --stack "\$stack" --dir "\$dir" --markdown "\$md"/);
  assert.deepEqual(forkJob().permissions, { contents: "read" });
  assert.doesNotMatch(JSON.stringify(forkJob()), /secrets\./);
});

/**
 * The fork job's engine step, run by bash as a runner runs it, on a base and a head of this
 * repository (prod only, to bound the time) where head moves prod to another region: the comment
 * it leaves for plan-comment.yml holds the engine's replacements with the field that forced them,
 * and the engine's own refusal to replace protected volumes.
 */
const engine = builtEngine();
test("fork PRs: the engine step comments the engine's replacements of a region change, with the field that forced them", { skip: engine ? false : "the Pulumi engine is not built here (npm run engine:build)", timeout: 15 * 60_000 }, () => {
  const workspace = mkdtempSync(path.join(tmpdir(), "hm-fork-"));
  try {
    for (const side of ["base", "head"]) {
      const dir = path.join(workspace, side);
      mkdirSync(dir);
      execFileSync("bash", ["-c", `git -C "${ROOT}" archive HEAD | tar -x -C "${dir}"`]);
      symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
      for (const f of readdirSync(dir)) if (/^Pulumi\.\w+\.yaml$/.test(f) && f !== "Pulumi.prod.yaml") unlinkSync(path.join(dir, f));
    }
    const headProd = path.join(workspace, "head", "Pulumi.prod.yaml");
    writeFileSync(headProd, readFileSync(headProd, "utf8").replace(/^(\s*hardened-matrix:region:) fra1$/m, "$1 ams3"));
    assert.match(readFileSync(headProd, "utf8"), /hardened-matrix:region: ams3/);
    // What the step before leaves: the marker line, then the offline plan's section.
    mkdirSync(path.join(workspace, "result"));
    writeFileSync(path.join(workspace, "result", "comment.md"), "<!-- hardened-matrix offline plan -->\n#### Offline plan: base → head\n");
    const step = (forkJob().steps as Doc[]).find((s) => s.name === ENGINE_STEP)!;
    const r = spawnSync("bash", ["--noprofile", "--norc", "-eo", "pipefail", "-c", String(step.run)], {
      cwd: workspace,
      env: { PATH: process.env.PATH, HOME: process.env.HOME },
      encoding: "utf8",
      timeout: 14 * 60_000,
    });
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
    const comment = readFileSync(path.join(workspace, "result", "comment.md"), "utf8");
    const lines = comment.split("\n");
    assert.equal(lines[0], "<!-- hardened-matrix offline plan -->", "plan-comment.yml finds its marker on the first line");
    assert.ok(comment.indexOf("#### Pulumi's own preview: base → head") < comment.indexOf("#### Offline plan: base → head"), comment.slice(0, 2000));
    assert.match(comment, /### `prod`: Pulumi's own preview/);
    const row = (name: string) => lines.find((l) => l.startsWith(`| \`${name}\` |`)) ?? "";
    // The volumes and the VPC are replaced because their region changed; the droplets because the VPC they are in is.
    for (const volume of ["hm-prod-postgres", "hm-prod-dendrite", "hm-prod-acme"]) assert.match(row(volume), /\| `digitalocean:index\/volume:Volume` \| `region`: "fra1" → "ams3" \|/, comment.slice(0, 4000));
    assert.match(row("cloud-nodes-vpc"), /`region`: "fra1" → "ams3"/);
    for (const droplet of ["hm-prod-1", "hm-prod-2", "hm-prod-3"]) assert.match(row(droplet), /\| `digitalocean:index\/droplet:Droplet` \| `vpcUuid`: "[0-9a-f-]+" → \[unknown\] \|/);
    // The engine's own diff line and its refusal on protect, word for word.
    assert.match(comment, /~ region\s+: "fra1" => "ams3"/);
    assert.match(comment, /unable to replace resource "urn:pulumi:prod::hardened-matrix::[^"]*digitalocean:index\/volume:Volume::hm-prod-postgres"\nas it is currently marked for protection/);
  } finally {
    rmSync(workspace, { recursive: true, force: true });
  }
});
