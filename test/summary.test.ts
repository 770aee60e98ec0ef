import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import type { Summary } from "../plan/summary";
import { runPlanCli } from "./support/plan";

// The summary `npm run plan` ends with, and its summary.json, as a user runs it (own process per plan).

function plan(stack: string): { stdout: string; summary: Summary; outputs: Record<string, unknown>; resources: Array<{ type: string; inputs: Record<string, unknown> }> } {
  const out = mkdtempSync(path.join(tmpdir(), "hm-summary-"));
  const r = runPlanCli(["--stack", stack, "--out", out]);
  assert.equal(r.status, 0, r.stderr);
  const read = (f: string) => JSON.parse(readFileSync(path.join(out, stack, f), "utf8"));
  return { stdout: r.stdout, summary: read("summary.json"), outputs: read("outputs.json"), resources: read("resources.json") };
}

test("local: the summary says where users connect, what this machine opens, and the next commands", () => {
  const { stdout, summary } = plan("local");
  assert.match(stdout, /Summary of stack "local"/);
  assert.equal(summary.endpoints.clientUrl, "https://matrix.localhost:8443");
  assert.equal(summary.monthlyCostUsd, undefined);
  assert.deepEqual(summary.openToInternet[0]!.ports.slice(0, 3), ["8080/tcp", "8443/tcp", "8448/tcp"]);
  assert.match(summary.clients, /not Element X/);
  assert.ok(summary.warnings.some((w) => /self-signed/.test(w)));
  assert.deepEqual(summary.next.at(-1), "npx pulumi up --stack local");
});

test("dev: the staging CA and every missing credential are warned about, and the cost parts add up to the program's own estimate", () => {
  const { stdout, summary, outputs } = plan("dev");
  assert.ok(summary.warnings.some((w) => /letsencrypt-staging: its certificates are trusted by no client/.test(w)), summary.warnings.join("\n"));
  assert.ok(summary.warnings.some((w) => /digitalocean:token, .*cloudflare:apiToken, tailscale:apiKey/.test(w)));
  assert.ok(summary.next.includes("npx pulumi config set --stack dev --secret digitalocean:token ..."));
  const parts = summary.monthlyCostUsd!.parts.reduce((sum, p) => sum + p.usd, 0);
  assert.equal(Math.round(parts * 100) / 100, summary.monthlyCostUsd!.total);
  assert.equal(summary.monthlyCostUsd!.total, outputs.estimatedMonthlyCostUsd, "the summary and the program price the same things");
  assert.match(stdout, /Monthly cost {3}about USD \d+\.\d\d/);
});

test("prod: only the edge and TURN nodes are open to the internet, each with its own ports; admins are named", () => {
  const { summary, outputs } = plan("prod");
  const open = Object.fromEntries(summary.openToInternet.map((n) => [n.node, n.ports]));
  assert.deepEqual(open["hm-prod-1"], ["80/tcp", "443/tcp", "8448/tcp"]);
  assert.deepEqual(open["hm-prod-2"], []);
  assert.ok(open["hm-prod-3"]!.includes("3478/udp"));
  assert.ok(!Object.values(open).flat().some((p) => p.startsWith("22/")));
  assert.equal(summary.monthlyCostUsd!.total, outputs.estimatedMonthlyCostUsd);
  assert.match(summary.adminAccess[0]!, /alice@example\.org, bob@example\.org/);
  assert.match(summary.endpoints.federation, /^_matrix-fed\._tcp\.example\.org \(SRV\) -> matrix\.example\.org:8448/);
});
