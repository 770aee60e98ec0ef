import * as cloudflare from "@pulumi/cloudflare";
import * as pulumi from "@pulumi/pulumi";
import { renderWellKnownWorker } from "../render/funnel";

export interface WellKnownWorkerArgs {
  accountId: pulumi.Input<string>;
  zoneId: pulumi.Input<string>;
  /** The Matrix server name whose /.well-known/matrix/* the Worker answers. */
  serverName: string;
  documents: { server: string; client: string };
  /** Worker script name (unique in the account). */
  scriptName: string;
}

/**
 * Serves the server name's /.well-known/matrix documents from Cloudflare (ingress funnel: the
 * domain's own web server, if any, is elsewhere, and the edge has no public address), so no one
 * copies them by hand. A route runs only on a hostname proxied by Cloudflare (README: Funnel).
 * Types: @pulumi/cloudflare 6.22.1 workersScript.d.ts (accountId, scriptName, content,
 * mainModule: module syntax) and workersRoute.d.ts (zoneId, pattern, script).
 */
export class WellKnownWorker extends pulumi.ComponentResource {
  readonly pattern: string;

  constructor(name: string, args: WellKnownWorkerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:cloud:WellKnownWorker", name, {}, opts);
    const script = new cloudflare.WorkersScript(
      `${name}-script`,
      {
        accountId: args.accountId,
        scriptName: args.scriptName,
        content: renderWellKnownWorker(args.documents),
        mainModule: "well-known.mjs",
        compatibilityDate: "2026-11-01",
      },
      { parent: this },
    );
    this.pattern = `${args.serverName}/.well-known/matrix/*`;
    new cloudflare.WorkersRoute(`${name}-route`, { zoneId: args.zoneId, pattern: this.pattern, script: script.scriptName }, { parent: this });
    this.registerOutputs({ pattern: this.pattern });
  }
}
