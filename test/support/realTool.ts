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
