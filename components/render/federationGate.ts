import { readFileSync } from "node:fs";
import * as path from "node:path";

/**
 * The federation gate's program: one plain Node.js file (federationGate.server.js, next to this
 * renderer) with its settings written into it. Traefik's forwardAuth calls it on the federation
 * router; the whole decision is the file's `decide`.
 *
 * Why not a Traefik local plugin (Yaegi): a plugin is a Go source tree that must be mounted into
 * Traefik's own container under /plugins-local and interpreted by Yaegi inside the edge process,
 * so a parser bug or a panic there runs with Traefik's privileges and takes the edge down; a small
 * service is isolated, hardened like every other, and its very file is tested with a real node here.
 */
const SOURCE = readFileSync(path.join(__dirname, "federationGate.server.js"), "utf8");
const SETTINGS_LINE = /^const SETTINGS = .*; \/\/ @@SETTINGS@@$/m;

export interface FederationGateSettings {
  /** Server names whose signed requests may reach Dendrite (exact match, as Dendrite compares them). */
  allowedOrigins: string[];
  port: number;
}

export function renderFederationGate(s: FederationGateSettings): string {
  if (s.allowedOrigins.length === 0) throw new Error("federation gate: the allowlist is empty");
  if (SOURCE.match(new RegExp(SETTINGS_LINE.source, "gm"))?.length !== 1) throw new Error("federation gate: settings line not found exactly once");
  const settings = { allowedOrigins: [...s.allowedOrigins].sort(), port: s.port };
  return SOURCE.replace(SETTINGS_LINE, () => `const SETTINGS = ${JSON.stringify(settings)}; // rendered by hardened-matrix`);
}
