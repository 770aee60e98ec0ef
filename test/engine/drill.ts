/**
 * Day-2 drills through the real engine over the simulated cloud (README "Day-2 drills").
 *
 *   npm run drill -- --list                      every drill, one line each
 *   npm run drill -- NAME [NAME...] [--keep DIR] run drills (--keep: one drill, its sandbox kept in DIR)
 *   npm run drill -- --all [--jobs N]            every drill, N at a time (default 1)
 *   npm run drill -- NAME --program-ref a1620e9  the program (index.ts, components/, stack files) of a
 *                                                git ref, with this tree's harness and simulated cloud
 *
 * Each stack's first deploy is made once per run and copied for every drill of that stack.
 * Exit status 1 when a drill fails.
 */
import { parseArgs } from "node:util";
import { DrillRunner, type Drill } from "./drills/framework";
import { DRILLS } from "./drills";

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      list: { type: "boolean" },
      all: { type: "boolean" },
      keep: { type: "string" },
      jobs: { type: "string" },
      "program-ref": { type: "string" },
    },
  });
  if (values.list) {
    const width = Math.max(...DRILLS.map((d) => d.name.length));
    for (const d of DRILLS) console.log(`${d.name.padEnd(width)}  ${d.summary}${d.findings ? ` (issue 15: ${d.findings.join(", ")})` : ""}`);
    return 0;
  }
  const chosen = values.all ? DRILLS : positionals.map((n) => DRILLS.find((d) => d.name === n) ?? n);
  const unknown = chosen.filter((d) => typeof d === "string");
  if (unknown.length > 0 || chosen.length === 0) {
    console.error(unknown.length > 0 ? `no drill named ${unknown.join(", ")} (npm run drill -- --list)` : "name a drill, or --all, or --list");
    return 2;
  }
  if (values.keep && chosen.length !== 1) {
    console.error("--keep DIR keeps the sandbox of one drill");
    return 2;
  }
  const runner = new DrillRunner({ programRef: values["program-ref"], keep: values.keep, log: (l) => console.log(l) });
  try {
    const drills = chosen.filter((d): d is Drill => typeof d !== "string");
    const results = await runner.runAll(drills, Number(values.jobs ?? "1"), (r) => {
      const known = drills.find((d) => d.name === r.name)?.knownDefect;
      console.log(`${r.ok ? "PASS" : known ? "KNOWN DEFECT" : "FAIL"} ${r.name} (${r.seconds.toFixed(0)} s)${r.replaced ? ` replaced ${r.replaced.length}: ${r.replaced.join(", ")}` : ""}${r.updated?.length ? `; services updated: ${r.updated.join(", ")}` : ""}${r.dir ? ` [kept in ${r.dir}]` : ""}`);
      if (!r.ok && known) console.log(`    ${known}`);
      if (!r.ok) console.log(r.message.replace(/^/gm, "    "));
    });
    const failed = results.filter((r) => !r.ok && !drills.find((d) => d.name === r.name)?.knownDefect);
    console.log(`${results.length - failed.length} passed, ${failed.length} failed${values["program-ref"] ? ` (program of ${values["program-ref"]})` : ""}`);
    return failed.length > 0 ? 1 : 0;
  } finally {
    runner.close();
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
