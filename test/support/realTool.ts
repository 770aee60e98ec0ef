import { execFileSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";

/**
 * Finds a real program for a real-program test. On a developer machine without it the test is
 * skipped with the install hint; in CI (CI=true) a missing program fails the test, so nothing
 * is silently skipped there.
 */
export function findTool(name: string, debianPackage: string): string | undefined {
  const postgresBins = existsSync("/usr/lib/postgresql")
    ? readdirSync("/usr/lib/postgresql").sort().reverse().map((v) => `/usr/lib/postgresql/${v}/bin/${name}`)
    : [];
  const candidates = [`/usr/bin/${name}`, `/usr/sbin/${name}`, `/usr/local/bin/${name}`, ...postgresBins];
  for (const c of candidates) if (existsSync(c)) return c;
  try {
    const found = execFileSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).trim();
    if (found) return found;
  } catch {
    // not on PATH
  }
  if (process.env.CI) {
    throw new Error(`${name} is required in CI: install Debian's ${debianPackage} (see .ci/run)`);
  }
  return undefined;
}

export function skipReason(name: string, debianPackage: string): string {
  return `${name} not installed (apt-get install ${debianPackage}); CI runs this test`;
}

/**
 * Finds every tool a real-program test needs (`key: [program, Debian package]`); `skip` names the first
 * one missing (only off CI: in CI `findTool` throws instead).
 */
export function findTools<K extends string>(needed: { [P in K]?: readonly string[] }): { tools: Partial<Record<K, string>>; skip?: string } {
  const tools: Partial<Record<K, string>> = {};
  let skip: string | undefined;
  for (const [key, spec] of Object.entries(needed) as Array<[K, readonly string[] | undefined]>) {
    const [name, pkg] = spec ?? [];
    if (name === undefined || pkg === undefined) continue;
    tools[key] = findTool(name, pkg);
    if (tools[key] === undefined && skip === undefined) skip = skipReason(name, pkg);
  }
  return { tools, skip };
}

/** Polls `probe` every half second until it returns a value, or fails after `timeoutMs` with its last error. */
export async function eventually<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`${what}: not within ${timeoutMs} ms${last ? `: ${(last as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}
