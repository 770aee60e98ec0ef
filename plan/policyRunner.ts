import { policies as packPolicies, type PolicyResourceOptions, type ResourceValidation, type ResourceValidationArgs, type ResourceValidationPolicy } from "../policy/policies";
import type { Plan } from "./plan";

/**
 * Runs the policy pack's resource policies the way the Pulumi engine does, without the engine
 * (@pulumi/policy 1.21 exports no test helper). Mirrors @pulumi/policy 1.21.0 server.js
 * makeAnalyzeRpcFun: a validation tagged with a Pulumi type is skipped for other types; props are
 * the inputs with secrets unwrapped; `notApplicable` ends that policy for the resource.
 */

export interface PolicyTarget {
  type: string;
  name: string;
  urn: string;
  props: Record<string, unknown>;
  opts: PolicyResourceOptions;
}

export interface Violation {
  policy: string;
  urn: string;
  message: string;
}

class NotApplicable extends Error {}

function pulumiTypeOf(v: unknown): string | undefined {
  const t = (v as { __pulumiType?: unknown } | undefined)?.__pulumiType;
  return typeof t === "string" && t.length > 0 ? t : undefined;
}

/** Every violation the policies report for one resource. */
export async function checkResource(target: PolicyTarget, policies: ResourceValidationPolicy[] = packPolicies): Promise<Violation[]> {
  const found: Violation[] = [];
  for (const p of policies) {
    if (!p.validateResource) continue;
    const validations: ResourceValidation[] = Array.isArray(p.validateResource) ? p.validateResource : [p.validateResource];
    if (!Array.isArray(p.validateResource)) {
      const only = pulumiTypeOf(p.validateResource);
      if (only && only !== target.type) continue;
    }
    const isType = (cls: unknown): boolean => pulumiTypeOf(cls) === target.type;
    const args: ResourceValidationArgs = {
      type: target.type,
      props: target.props,
      urn: target.urn,
      name: target.name,
      opts: target.opts,
      stackTags: new Map(),
      isType,
      asType: ((cls: unknown) => (isType(cls) ? target.props : undefined)) as ResourceValidationArgs["asType"],
      getConfig: <T extends object>() => ({}) as T,
      notApplicable: (reason?: string): never => {
        throw new NotApplicable(reason);
      },
    };
    for (const validate of validations) {
      try {
        await validate(args, (message) => found.push({ policy: p.name, urn: target.urn, message }));
      } catch (e) {
        if (!(e instanceof NotApplicable)) throw e;
      }
    }
  }
  return found;
}

/** The plan's resources as the engine hands them to a policy pack: inputs with secrets unwrapped, options. */
export function targetsOf(plan: Plan): PolicyTarget[] {
  return plan.resources
    .filter((r) => r.custom)
    .map((r) => ({
      type: r.type,
      name: r.name,
      urn: r.urn,
      props: (plan.rawInputs.get(r.urn) ?? {}) as Record<string, unknown>,
      opts: {
        protect: r.options.protect,
        ignoreChanges: r.options.ignoreChanges,
        deleteBeforeReplace: r.options.deleteBeforeReplace,
        aliases: [],
        customTimeouts: { createSeconds: 0, updateSeconds: 0, deleteSeconds: 0 },
        additionalSecretOutputs: r.options.additionalSecretOutputs,
        parent: r.parent || undefined,
      },
    }));
}

export async function checkPlan(plan: Plan, policies: ResourceValidationPolicy[] = packPolicies): Promise<Violation[]> {
  const all: Violation[] = [];
  for (const t of targetsOf(plan)) all.push(...(await checkResource(t, policies)));
  return all;
}
