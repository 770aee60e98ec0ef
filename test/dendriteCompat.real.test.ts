import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { BlockList, isIPv4 } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { parse } from "yaml";
import { DENDRITE_V013_DIFFERENCES, STAND_IN, V0152_DEFAULT_DENY_NETWORKS, V0152_ONLY_KEYS, type V013Difference } from "./support/dendriteV013";
import { planToDisk, ROOT, STACKS } from "./support/plan";

// The Dendrite stand-in (v0.13.8) judges every stack's rendered dendrite.yaml with its own config
// loader (test/support/dendriteConfig): what it lacks or treats differently must be exactly the
// list in test/support/dendriteV013.ts, so a key the renderer adds that v0.13.8 lacks fails here
// until it is listed with its evidence.

const BUILD = path.join(ROOT, "test/support/dendriteConfig/build.sh");
const DENDRITE_YAML = "dendrite-config/dendrite.yaml";
const SIGNING_KEY = "dendrite-signing-key/matrix-signing-key.pem";

/** Builds (cold: minutes) or finds the checker. In CI a missing Go or a failed build fails the test. */
function buildChecker(): { bin?: string; skip?: string } {
  const r = spawnSync("bash", [BUILD], { encoding: "utf8", timeout: 30 * 60_000 });
  if (r.status === 0) return { bin: r.stdout.trim().split("\n").pop() };
  const why = `the Dendrite ${STAND_IN.version} config checker did not build (${r.status ?? r.signal}): ${(r.stderr ?? "").slice(-1500)}`;
  if (process.env.CI) throw new Error(why);
  return { skip: `${why}; CI runs this test` };
}
const checker = buildChecker();

interface Report {
  dendrite: string;
  loadError: string | null;
  verifyErrors: string[];
  strictErrors: string[];
  unknownKeys: string[];
  values: { path: string; line: number; goType: string; written: unknown; effective: unknown; same: boolean }[];
  facts: Record<string, unknown>;
  problems: string[];
}

const work = mkdtempSync(path.join(tmpdir(), "hm-dendrite-compat-"));
after(() => rmSync(work, { recursive: true, force: true }));

function check(yamlText: string, keyPem: string): Report {
  const dir = mkdtempSync(path.join(work, "c-"));
  writeFileSync(path.join(dir, "dendrite.yaml"), yamlText, { mode: 0o600 });
  writeFileSync(path.join(dir, "key.pem"), keyPem, { mode: 0o600 });
  const r = spawnSync(checker.bin as string, ["-config", path.join(dir, "dendrite.yaml"), "-key", path.join(dir, "key.pem")], {
    cwd: dir,
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(r.status, 0, `dendrite-config exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Report;
}

/** Whether the parsed file has the dotted key (no list indexes). */
function has(doc: unknown, key: string): boolean {
  let node = doc;
  for (const part of key.split(".")) {
    if (node === null || typeof node !== "object" || !(part in node)) return false;
    node = (node as Record<string, unknown>)[part];
  }
  return true;
}

function observedBy(kind: V013Difference["observed"]["kind"]): V013Difference[] {
  return DENDRITE_V013_DIFFERENCES.filter((d) => d.observed.kind === kind);
}

describe(`Dendrite ${STAND_IN.version} (the stand-in) on the rendered dendrite.yaml`, { skip: checker.skip ?? false }, () => {
  const rendered = new Map<string, { yaml: string; key: string; doc: unknown; report: Report }>();
  before(() => {
    for (const stack of STACKS) {
      const plan = planToDisk(stack);
      const yaml = plan.files.get(DENDRITE_YAML);
      const key = plan.files.get(SIGNING_KEY);
      assert.ok(yaml && key, `${stack}: no ${DENDRITE_YAML} or ${SIGNING_KEY} planned`);
      rendered.set(stack, { yaml, key, doc: parse(yaml), report: check(yaml, key) });
    }
  });

  test("the checker is linked against the stand-in's version", () => {
    for (const [stack, r] of rendered) assert.equal(r.report.dendrite, STAND_IN.version, stack);
  });

  for (const stack of STACKS) {
    test(`${stack}: v0.13.8 loads the file and the signing key, and Verify passes`, () => {
      const { report } = rendered.get(stack)!;
      const refused = observedBy("refused");
      assert.deepEqual(report.problems, [], "the checker's walk and yaml.v2's strict decoder disagree");
      if (refused.length === 0) {
        assert.equal(report.loadError, null);
        assert.deepEqual(report.verifyErrors, []);
      } else {
        // Only failures the list names, each with the stand-in's adaptation.
        for (const e of [report.loadError, ...report.verifyErrors].filter((x): x is string => x !== null)) {
          assert.ok(
            refused.some((d) => d.observed.kind === "refused" && d.observed.message.test(e)),
            `${stack}: v0.13.8 refuses "${e}", which the list does not name`,
          );
        }
      }
      assert.ok(report.values.length > 30, `${stack}: only ${report.values.length} values read`);
    });

    test(`${stack}: the keys v0.13.8 lacks or treats differently are exactly the list`, () => {
      const { report, doc } = rendered.get(stack)!;
      const present = (kind: V013Difference["observed"]["kind"]) =>
        observedBy(kind)
          .filter((d) => has(doc, d.key))
          .map((d) => d.key)
          .sort();

      assert.deepEqual(
        report.unknownKeys,
        present("unknownKey"),
        `${stack}: keys v0.13.8's config structs do not know (add one to test/support/dendriteV013.ts with its evidence, or fix the renderer)`,
      );
      assert.deepEqual(
        report.values
          .filter((v) => !v.same)
          .map((v) => v.path)
          .sort(),
        present("effectiveValue"),
        `${stack}: keys whose loaded value differs from the file`,
      );
      for (const d of observedBy("fact")) {
        if (d.observed.kind !== "fact" || !has(doc, d.key)) continue;
        assert.equal(report.facts[d.observed.fact], d.observed.value, `${stack}: ${d.key}: fact ${d.observed.fact}`);
      }
    });

    test(`${stack}: every key is one element-hq/dendrite v0.15.2 knows, and deny_networks covers its default`, () => {
      const { report, doc } = rendered.get(stack)!;
      // v0.15.2's setup/config is v0.13.8's plus V0152_ONLY_KEYS (dendriteV013.ts): a key neither knows is a renderer defect.
      for (const k of report.unknownKeys) assert.ok(V0152_ONLY_KEYS.includes(k), `${stack}: ${k} is unknown to v0.15.2 as well`);
      // A rendered deny_networks replaces v0.15.2's default list whole: each default range must stay denied.
      const deny = (doc as { federation_api: { deny_networks: string[] } }).federation_api.deny_networks;
      for (const def of V0152_DEFAULT_DENY_NETWORKS) {
        const [addr, bits] = def.split("/") as [string, string];
        const family = isIPv4(addr) ? "ipv4" : "ipv6";
        const covered = deny.some((ours) => {
          const [a, b] = ours.split("/") as [string, string];
          if ((isIPv4(a) ? "ipv4" : "ipv6") !== family || Number(b) > Number(bits)) return false;
          const list = new BlockList();
          list.addSubnet(a, Number(b), family);
          return list.check(addr, family);
        });
        assert.ok(covered, `${stack}: federation_api.deny_networks no longer denies ${def} (v0.15.2's default)`);
      }
    });
  }

  test("every listed difference applies to some stack's file (the list holds nothing stale)", () => {
    for (const d of DENDRITE_V013_DIFFERENCES) {
      assert.ok(
        [...rendered.values()].some((r) => has(r.doc, d.key)),
        `${d.key} is listed but no stack renders it`,
      );
      assert.ok(d.v013.length > 0 && d.v0152.length > 0 && d.meaning.length > 0, `${d.key}: evidence of both versions and a meaning`);
    }
  });

  test("the checker can fail: an unknown key, a refused value, a value v0.13.8 replaces, a bad signing key", () => {
    const { yaml, key } = rendered.get("local") ?? [...rendered.values()][0]!;
    const edited = yaml
      .replace(/^client_api:\n/m, 'client_api:\n  registration_disabeld: true\n')
      .replace(/^( {4}cache_size:) \d+$/m, "$1 -5")
      .replace(/^global:\n/m, 'global:\n  key_id: "ed25519:typed_in_config"\n');
    assert.notEqual(edited, yaml);
    const r = check(edited, key);
    assert.deepEqual(r.problems, []);
    assert.ok(r.unknownKeys.includes("client_api.registration_disabeld"), JSON.stringify(r.unknownKeys));
    assert.ok(r.verifyErrors.some((e) => /cache_size.*-5/.test(e)), JSON.stringify(r.verifyErrors));
    // loadConfig takes the key ID from the PEM file over global.key_id.
    const keyId = r.values.find((v) => v.path === "global.key_id");
    assert.equal(keyId?.same, false, JSON.stringify(keyId));
    assert.equal(keyId?.written, "ed25519:typed_in_config");

    const bad = check(yaml, key.replace(/^Key-ID: .*$/m, "Key-ID: ed25519:not-allowed"));
    assert.match(bad.loadError ?? "", /illegal characters/);
  });
});
