/**
 * The policy pack over the offline plan: `npm run plan:check -- --stack NAME [--json]`.
 * Plans the stack under mocks (like `npm run plan`) and runs every policy of policy/ on every
 * resource, with no Pulumi CLI, and names every provider credential or secret `pulumi up` would
 * miss. Exit 0: nothing to fix; 1: violations or credential problems (or the plan failed).
 */
import { parseArgs } from "node:util";
import { policies } from "../policy/policies";
import { planStack } from "./plan";
import { checkPlan, targetsOf } from "./policyRunner";
import { credentialProblems, stackSettings } from "./credentials";

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { stack: { type: "string", short: "s" }, json: { type: "boolean", default: false } } });
  if (!values.stack) {
    process.stderr.write("usage: npm run plan:check -- --stack NAME [--json]\n");
    return 2;
  }
  const plan = await planStack(values.stack);
  if (plan.error) {
    process.stderr.write(`plan of stack "${values.stack}" failed: ${plan.error instanceof Error ? plan.error.message : String(plan.error)}\n`);
    return 1;
  }
  const violations = await checkPlan(plan);
  const resources = targetsOf(plan).length;
  // What `pulumi up` needs beyond the plan: provider credentials and secrets the CLI can decrypt.
  const credentials = credentialProblems(values.stack, stackSettings(values.stack));
  if (values.json) process.stdout.write(`${JSON.stringify({ stack: values.stack, resources, policies: policies.length, violations, credentials }, null, 2)}\n`);
  else {
    for (const v of violations) process.stdout.write(`[${v.policy}] ${v.message}\n`);
    for (const c of credentials) process.stdout.write(`[credentials] ${c}\n`);
    process.stdout.write(`${values.stack}: ${policies.length} policies over ${resources} resources, ${violations.length} violation(s), ${credentials.length} credential problem(s)\n`);
  }
  return violations.length === 0 && credentials.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
