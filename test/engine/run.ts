/**
 * One engine operation on a stack, through Pulumi's own engine over the simulated providers.
 *
 *   npm run preview -- --stack prod                 `pulumi preview --diff` of a fresh stack
 *   tsx test/engine/run.ts up --stack local --dir D  an `up` into D's simulated cloud (kept)
 *   tsx test/engine/run.ts preview --stack prod --dir D --set region=ams3
 *   tsx test/engine/run.ts advance --dir D --hours 2  moves the simulated clock
 *   tsx test/engine/run.ts up --stack prod --dir D --replace 'urn:pulumi:...::hm-prod-2-generation'
 *   tsx test/engine/run.ts up --stack local --dir D --docker-host unix:///tmp/x/docker.sock
 *                                                   real mode: docker resources and commands applied
 *                                                   to that (private) engine (sim/real/)
 *
 * Operations: preview, up, refresh, destroy, advance. Without --dir a temporary directory is used
 * and removed. `--set key=value` overrides one stack-file entry (value parsed as YAML); `--json`
 * prints the engine's summary as JSON on the last line; `--replace URN` (repeatable, preview and up)
 * asks the engine to replace that resource, as `pulumi up --replace` does; `--exclude-protected` (destroy)
 * keeps protected resources, as `pulumi destroy --exclude-protected` does. `--markdown FILE` (preview)
 * writes what a pull request comment shows: the engine's summary, every resource it would replace
 * with the fields its provider said force the replacement, every delete, and the engine's own errors
 * (written also when the preview fails, e.g. on `protect`). Exit status 1 when the operation fails.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import type { EngineEvent, OpMap, StepEventMetadata } from "@pulumi/pulumi/automation";
import { parse } from "yaml";
import { advanceClock } from "./sim/cloud";
import { SimNet } from "./sim/net";
import { UNKNOWN } from "./sim/values";
import { buildEngine, cloudFile, openStack, type Sandbox } from "./harness";

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      stack: { type: "string" },
      dir: { type: "string" },
      set: { type: "string", multiple: true },
      replace: { type: "string", multiple: true },
      hours: { type: "string" },
      json: { type: "boolean" },
      markdown: { type: "string" },
      "docker-host": { type: "string" },
      "exclude-protected": { type: "boolean" },
    },
  });
  const op = positionals[0] ?? "preview";
  if (!["preview", "up", "refresh", "destroy", "advance"].includes(op)) {
    console.error(`unknown operation ${op}: preview, up, refresh, destroy or advance`);
    return 2;
  }
  const temporary = values.dir === undefined;
  let streamedErrors = false;
  let simNet: SimNet | undefined;
  const dir = values.dir ? path.resolve(values.dir) : mkdtempSync(path.join(os.tmpdir(), "hm-engine-"));
  try {
    if (op === "advance") {
      process.env.HM_SIM_CLOUD = cloudFile({ dir, stack: "" });
      console.log(`simulated clock: ${advanceClock(Number(values.hours ?? "1") * 3600)}`);
      return 0;
    }
    if (!values.stack) {
      console.error("--stack NAME is required (a Pulumi.NAME.yaml next to Pulumi.yaml)");
      return 2;
    }
    const overrides: Record<string, unknown> = {};
    for (const s of values.set ?? []) {
      const i = s.indexOf("=");
      if (i < 1) throw new Error(`--set ${s}: expected key=value`);
      const key = s.slice(0, i);
      overrides[key.includes(":") ? key : `hardened-matrix:${key}`] = parse(s.slice(i + 1));
    }
    if (values.markdown !== undefined && op !== "preview") {
      console.error("--markdown is for preview");
      return 2;
    }
    const replace = values.replace ?? [];
    if (replace.length > 0 && op !== "preview" && op !== "up") {
      console.error("--replace is for preview and up");
      return 2;
    }
    const bin = buildEngine();
    const sb: Sandbox = { dir, stack: values.stack, dockerHost: values["docker-host"] };
    // The simulated network (Headscale's control node), for this operation; its state stays in cloud.json.
    simNet = await SimNet.start(cloudFile(sb), path.join(dir, "net"));
    Object.assign(process.env, simNet.env());
    const stack = await openStack(sb, bin, overrides);
    const onOutput = (out: string) => process.stdout.write(out);
    // The CLI's stderr (its errors), as it comes.
    const onError = (err: string) => {
      streamedErrors = true;
      process.stderr.write(err);
    };
    let summary: unknown;
    let outputs: Record<string, unknown> | undefined;
    switch (op) {
      case "preview": {
        const events: EngineEvent[] = [];
        let text = "";
        try {
          const r = await stack.preview({ diff: true, replace, onOutput: (o) => ((text += o), onOutput(o)), onError, onEvent: (e) => events.push(e) });
          summary = r.changeSummary;
        } finally {
          if (values.markdown) writeFileSync(values.markdown, previewMarkdown(values.stack, events, text));
        }
        break;
      }
      case "up": {
        const r = await stack.up({ diff: true, replace, onOutput, onError });
        summary = r.summary.resourceChanges;
        // What `pulumi stack output --json` shows (ops/check.ts reads it); secrets stay masked.
        outputs = Object.fromEntries(Object.entries(r.outputs).map(([k, o]) => [k, o.secret ? "[secret]" : o.value]));
        break;
      }
      case "refresh": {
        const r = await stack.refresh({ onOutput, onError });
        summary = r.summary.resourceChanges;
        break;
      }
      case "destroy": {
        // --exclude-protected: `pulumi destroy --exclude-protected` (protected volumes are kept).
        const r = await stack.destroy({ onOutput, onError, excludeProtected: values["exclude-protected"] });
        summary = r.summary.resourceChanges;
        break;
      }
    }
    if (values.json) console.log(`\n${JSON.stringify({ op, summary, ...(outputs ? { outputs } : {}) })}`);
    return 0;
  } catch (e) {
    // The engine's output and errors have been streamed already; the Automation API's error
    // message would repeat all of it.
    if (!streamedErrors) console.error((e as Error).message || String(e));
    return 1;
  } finally {
    await simNet?.stop();
    if (temporary) rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The engine's own `--diff` lines per resource: under each step header its `[urn=...]`, then the
 * properties, a changed one marked `~`, `+` or `-`. Long values are cut: a comment has a size limit.
 */
function diffLines(text: string): Map<string, string[]> {
  const found = new Map<string, string[]>();
  let urn: string | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\x1b\[[0-9;]*m/g, "").trimEnd();
    const u = /^\s*\[urn=([^\]]+)\]$/.exec(line);
    if (u) {
      urn = u[1];
      continue;
    }
    if (/^\s*(?:\+-|\+\+|--|[~+-])?\s*[a-z0-9-]+:[A-Za-z0-9/._-]*:[A-Za-z0-9]+: \(/.test(line) || /^\S/.test(line)) {
      urn = undefined;
      continue;
    }
    if (!urn || !/^\s*[~+-]\s*\S/.test(line) || /^\s*[~+-]\s*\[/.test(line)) continue;
    const list = found.get(urn) ?? [];
    if (list.length < 12) list.push(line.length > 160 ? `${line.slice(0, 157)}...` : line);
    else if (list.length === 12) list.push("    ...");
    found.set(urn, list);
  }
  return found;
}

const OP_WORDS: Partial<Record<keyof OpMap, string>> = { create: "to create", update: "to update", replace: "to replace", delete: "to delete", same: "unchanged" };

/** A value as the engine reported it, short; the engine masks secrets itself ("[secret]"). */
function shown(v: unknown): string {
  if (v === undefined) return "(unset)";
  // The engine's events carry its unknown sentinel where its text output prints [unknown].
  if (v === UNKNOWN) return "[unknown]";
  const t = JSON.stringify(v) ?? String(v);
  return t.length > 60 ? `${t.slice(0, 57)}...` : t;
}
const cell = (t: string) => t.replace(/\|/g, "\\|").replace(/\n/g, " ");
const nameOf = (urn: string) => urn.split("::").pop() ?? urn;

/**
 * The comment for one stack, from the engine's own events only: its summary, its replace and delete
 * steps (a replace step's `keys` are the replace keys the provider gave in its Diff, the engine's
 * reason; `diffs` every changed key), its updates, and its error diagnostics word for word.
 */
function previewMarkdown(stackName: string, events: EngineEvent[], text: string): string {
  const lines = diffLines(text);
  const steps = new Map<string, StepEventMetadata>();
  const replaceKeys = new Map<string, string[]>();
  for (const e of events) {
    const m = e.resourcePreEvent?.metadata;
    if (!m) continue;
    // A replacement is several steps (create-replacement, replace, delete-replaced): keep the `replace`;
    // its keys may travel on the create-replacement (a dependent replaced with a delete-first one).
    if ((m.op === "replace" || m.op === "create-replacement") && (m.keys ?? []).length > 0) replaceKeys.set(m.urn, m.keys!);
    if ((m.op === "replace" || m.op === "delete" || m.op === "update" || m.op === "create") && !(steps.get(m.urn)?.op === "replace")) steps.set(m.urn, m);
  }
  const counted = events.map((e) => e.summaryEvent?.resourceChanges).find((x) => x !== undefined);
  const byOp = (op: string) => [...steps.values()].filter((m) => m.op === op);
  const changes: OpMap = counted ?? Object.fromEntries(["create", "update", "replace", "delete"].map((op) => [op, byOp(op).length]));
  const errors = events.map((e) => e.diagnosticEvent).filter((d) => d !== undefined && d.severity === "error").map((d) => d!.message.trimEnd());
  const out: string[] = [`### \`${stackName}\`: Pulumi's own preview`, ""];
  const parts = (Object.keys(OP_WORDS) as Array<keyof OpMap>).filter((op) => (changes[op] ?? 0) > 0).map((op) => `${changes[op]} ${OP_WORDS[op]}`);
  out.push(`**The engine's summary:** ${parts.length > 0 ? parts.join(", ") : "no resources"}${counted ? "" : " (counted from its steps: it stopped before its summary)"}.`, "");
  const replaced = byOp("replace");
  if (replaced.length > 0) {
    out.push(`**Replaced (${replaced.length})**: the fields the provider said force a new resource (the engine's replace keys), old → new`, "");
    out.push("| resource | type | forced by |", "| --- | --- | --- |");
    for (const m of replaced) {
      const keys = replaceKeys.get(m.urn) ?? [];
      const why = keys.length > 0 ? keys.map((k) => `\`${k}\`: ${shown(m.old?.inputs?.[k])} → ${shown(m.new?.inputs?.[k])}`).join("<br>") : "no replace key (asked with --replace)";
      out.push(`| \`${nameOf(m.urn)}\` | \`${m.type}\` | ${cell(why)} |`);
    }
    out.push("", "<details><summary>The engine's diff of each replaced resource</summary>", "", "```diff");
    for (const m of replaced) out.push(`${nameOf(m.urn)} (${m.type}):`, ...(lines.get(m.urn) ?? ["    (no field lines)"]));
    out.push("```", "", "</details>", "");
  }
  const deleted = byOp("delete");
  if (deleted.length > 0) {
    out.push(`**Deleted (${deleted.length})**`, "", "| resource | type |", "| --- | --- |");
    for (const m of deleted) out.push(`| \`${nameOf(m.urn)}\` | \`${m.type}\` |`);
    out.push("");
  }
  if (errors.length > 0) out.push("**The engine refused** (its own words):", "", "```", ...errors, "```", "");
  for (const [op, title] of [["update", "Updated in place"], ["create", "Created"]] as const) {
    const list = byOp(op);
    if (list.length === 0) continue;
    out.push(`<details><summary>${title} (${list.length})</summary>`, "", "| resource | type | changed (the engine's diff) |", "| --- | --- | --- |");
    for (const m of list) out.push(`| \`${nameOf(m.urn)}\` | \`${m.type}\` | ${cell((lines.get(m.urn) ?? []).map((l) => /^\s*[~+-]\s*([\w.[\]"-]+)/.exec(l)?.[1] ?? "").filter(Boolean).join(", "))} |`);
    out.push("", "</details>", "");
  }
  return `${out.join("\n")}\n`;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
