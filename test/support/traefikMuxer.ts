import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import * as path from "node:path";
import { DEFAULT_IMAGES } from "../../components/settings";
import type { Router } from "./traefikRules";

/** The Traefik release the stacks deploy: its router code is what the harness runs. */
export const TRAEFIK_VERSION = DEFAULT_IMAGES.traefik.replace(/^traefik:/, "");
const SOURCE = path.join(__dirname, "traefikMuxer", "main.go");

/**
 * Builds test/support/traefikMuxer/main.go against github.com/traefik/traefik/v3 at the deployed
 * version, from the Go module proxy, into a cache outside the repository (reused while the version,
 * the harness and Go are unchanged). Returns the binary, or why it cannot be built.
 * traefik/traefik's go.mod replaces gorilla/mux with its fork containous/mux (RoutingPathKey lives
 * there) and names a local module dynamic/ext: both replaces are repeated here (the latter as an
 * empty stub; the router code does not import it). A cold build takes minutes.
 */
export function buildTraefikMuxer(): { bin?: string; error?: string } {
  const go = spawnSync("go", ["env", "GOVERSION"], { encoding: "utf8" });
  if (go.status !== 0) return { error: "go is not installed (Go >= 1.24 builds Traefik's router)" };
  const source = readFileSync(SOURCE, "utf8");
  const want = `traefik ${TRAEFIK_VERSION} ${go.stdout.trim()} ${createHash("sha256").update(source).digest("hex").slice(0, 16)}`;
  const cache = path.join(process.env.XDG_CACHE_HOME ?? path.join(homedir(), ".cache"), "hardened-matrix", `traefik-muxer-${TRAEFIK_VERSION}`);
  const bin = path.join(cache, "muxer");
  const stamp = path.join(cache, "stamp");
  if (existsSync(bin) && existsSync(stamp) && readFileSync(stamp, "utf8") === want) return { bin };
  rmSync(cache, { recursive: true, force: true });
  mkdirSync(path.join(cache, "ext-stub"), { recursive: true });
  writeFileSync(path.join(cache, "ext-stub", "go.mod"), "module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24\n");
  writeFileSync(
    path.join(cache, "go.mod"),
    [
      "module hardened-matrix.invalid/traefik-muxer",
      "",
      "go 1.24",
      "",
      `require github.com/traefik/traefik/v3 ${TRAEFIK_VERSION}`,
      "",
      "replace github.com/gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59",
      "",
      "replace github.com/traefik/traefik/dynamic/ext => ./ext-stub",
      "",
    ].join("\n"),
  );
  copyFileSync(SOURCE, path.join(cache, "main.go"));
  const r = spawnSync("go", ["build", "-o", bin, "."], {
    cwd: cache,
    encoding: "utf8",
    timeout: 25 * 60_000,
    env: { ...process.env, GOFLAGS: "-mod=mod -buildvcs=false", CGO_ENABLED: "0" },
  });
  if (r.status !== 0) return { error: `go build failed (${r.status ?? r.signal}): ${(r.stderr ?? "").slice(-2000)}` };
  writeFileSync(stamp, want);
  return { bin };
}

export interface MuxRequest {
  host: string;
  path: string;
  method: string;
}

/** The router Traefik's own muxer picks for each request among `routers` (one entrypoint's), "" for none. */
export function realRoute(bin: string, routers: Router[], requests: MuxRequest[]): string[] {
  const r = spawnSync(bin, [], {
    input: JSON.stringify({ routers: routers.map((x) => ({ name: x.name, rule: x.rule, priority: x.priority })), requests }),
    encoding: "utf8",
    timeout: 60_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`traefik muxer exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as string[];
}
