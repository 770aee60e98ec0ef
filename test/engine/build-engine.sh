#!/usr/bin/env bash
# Builds Pulumi's own engine (the CLI) from the Go module proxy at one pinned version into a cache
# outside the repository, and reuses it while the version is unchanged (a stamp file).
#   test/engine/build-engine.sh          build if needed (minutes, cold), print the bin directory
#   test/engine/build-engine.sh --check  print the bin directory if built, else exit 1
#   PULUMI_ENGINE_VERSION=3.x.y ...      another version (its own cache directory)
# Nothing here is committed: sources come from the module proxy, the binary stays in the cache.
# (The whole script is one function, so editing it while a build runs cannot derail that build.)
set -euo pipefail

main() {
  local version="${PULUMI_ENGINE_VERSION:-3.276.0}"
  local cache="${HARDENED_MATRIX_ENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hardened-matrix/pulumi-$version}"
  local bin="$cache/bin" stamp="$cache/stamp" log="$cache/build.log"
  # The stamp names what was built: a changed version, Go or recipe rebuilds.
  local recipe=2
  local want="pulumi $version recipe $recipe $(go env GOVERSION 2>/dev/null || echo no-go)"

  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$bin/pulumi" ]; then
    echo "$bin"
    return 0
  fi
  [ "${1:-}" = "--check" ] && return 1
  command -v go >/dev/null || { echo "build-engine: go is not installed (Go >= 1.26 builds pulumi v$version)" >&2; return 1; }

  mkdir -p "$cache/src" "$bin"
  # Module and build caches beside the binary: a cold build is really cold, and nothing is shared
  # with other users of the machine's Go caches. -modcacherw lets `rm -rf` remove the cache.
  export GOMODCACHE="$cache/gomod" GOCACHE="$cache/gobuild"
  export GOFLAGS="-mod=mod -modcacherw -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0

  # `go install pkg@version` refuses a module whose go.mod has replace directives, and pkg/v3's
  # go.mod (pulumi/pulumi pkg/go.mod at v3.276.0) has two:
  #   github.com/pulumi/pulumi/sdk/v3 => ../sdk          -> sdk/v3 required at the same version here
  #   github.com/atotto/clipboard => tgummerer/clipboard  -> repeated here
  # so the CLI is built from this small module, which requires both and repeats the second.
  # The Node.js language host (github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3)
  # is not built: the module proxy answers 403 "This module version is not available" for every
  # version of it. The program runs as an Automation API inline program instead: the Node process
  # serves the language runtime and the CLI connects to it (`--client`), see test/engine/harness.ts.
  cat > "$cache/src/go.mod" <<MOD
module hardened-matrix.invalid/pulumi-engine

go 1.26

require (
	github.com/pulumi/pulumi/pkg/v3 v$version
	github.com/pulumi/pulumi/sdk/v3 v$version
)

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
MOD
  rm -f "$cache/src/go.sum"

  local start
  start=$(date +%s)
  echo "build-engine: building pulumi v$version into $bin (a cold build takes minutes; log: $log)" >&2
  if ! (
    cd "$cache/src"
    echo "== $(date -u +%FT%TZ) building $want"
    # Lowest priority: the machine's cores are shared.
    nice -n 19 go build -trimpath \
      -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$version" \
      -o "$bin/pulumi.new" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
    mv "$bin/pulumi.new" "$bin/pulumi"
    echo "== built in $(( $(date +%s) - start ))s"
  ) >>"$log" 2>&1; then
    echo "build-engine: the build failed; the end of $log:" >&2
    tail -20 "$log" >&2
    return 1
  fi
  "$bin/pulumi" version >/dev/null
  echo "$want" > "$stamp"
  echo "build-engine: built in $(( $(date +%s) - start ))s" >&2
  echo "$bin"
}

main "$@"
exit $?
