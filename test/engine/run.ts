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
 * keeps protected resources, as `pulumi destroy --exclude-protected` does. Exit status 1 when the operation fails.
 */
import { mkdtempSync, rmSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { parse } from "yaml";
import { advanceClock } from "./sim/cloud";
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
    const replace = values.replace ?? [];
    if (replace.length > 0 && op !== "preview" && op !== "up") {
      console.error("--replace is for preview and up");
      return 2;
    }
    const bin = buildEngine();
    const sb: Sandbox = { dir, stack: values.stack, dockerHost: values["docker-host"] };
    const stack = await openStack(sb, bin, overrides);
    const onOutput = (out: string) => process.stdout.write(out);
    // The CLI's stderr (its errors), as it comes.
    const onError = (err: string) => {
      streamedErrors = true;
      process.stderr.write(err);
    };
    let summary: unknown;
    switch (op) {
      case "preview": {
        const r = await stack.preview({ diff: true, replace, onOutput, onError });
        summary = r.changeSummary;
        break;
      }
      case "up": {
        const r = await stack.up({ diff: true, replace, onOutput, onError });
        summary = r.summary.resourceChanges;
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
    if (values.json) console.log(`\n${JSON.stringify({ op, summary })}`);
    return 0;
  } catch (e) {
    // The engine's output and errors have been streamed already; the Automation API's error
    // message would repeat all of it.
    if (!streamedErrors) console.error((e as Error).message || String(e));
    return 1;
  } finally {
    if (temporary) rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
