#!/usr/bin/env bash
# Builds the dendrite-config checker (main.go here, against github.com/matrix-org/dendrite v0.13.8
# from the Go module proxy, modules pinned by go.sum) into a cache outside the repository, and reuses
# it while the version, the sources here and Go are unchanged (a stamp file).
#   test/support/dendriteConfig/build.sh          build if needed, print the binary's path
#   test/support/dendriteConfig/build.sh --check  print the path if built, else exit 1
# Nothing here is committed but the sources: modules and the binary stay in the cache.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's#^\s*github.com/matrix-org/dendrite \(v[^ ]*\)$#\1#p' "$here/go.mod")
[ -n "$version" ] || { echo "dendrite-config: no github.com/matrix-org/dendrite in $here/go.mod" >&2; exit 1; }
root="${XDG_CACHE_HOME:-$HOME/.cache}/hardened-matrix"
cache="$root/dendrite-config-$version"
bin="$cache/dendrite-config"

# Go as test/engine/build-engine.sh finds it: the one on PATH, the machine's /usr/local/go, or the
# toolchain build-engine.sh fetched from the module proxy into the same cache root (CI on a machine
# without Go runs build-engine.sh first). go.mod here says go 1.22 (v0.13.8 itself needs 1.21).
find_go() {
  local g v
  for g in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go "$root"/go-*/bin/go; do
    if [ -z "$g" ] || [ ! -x "$g" ]; then continue; fi
    v=$("$g" env GOVERSION 2>/dev/null || true)
    case "$v" in go1.2[2-9]*|go1.[3-9][0-9]*) echo "$g"; return 0 ;; esac
  done
  return 1
}

# The stamp names what was built: another Dendrite version, source, module list or Go rebuilds.
stamp_of() {
  local goversion="$1"
  echo "dendrite $version $goversion $(cat "$here/go.mod" "$here/go.sum" "$here/main.go" "$here/build.sh" | sha256sum | cut -c1-16)"
}

if [ "${1:-}" = "--check" ]; then
  go=$(find_go) || exit 1
  [ -x "$bin" ] && [ "$(cat "$cache/stamp" 2>/dev/null)" = "$(stamp_of "$("$go" env GOVERSION)")" ] && { echo "$bin"; exit 0; }
  exit 1
fi

go=$(find_go) || { echo "dendrite-config: no Go >= 1.22 (PATH, /usr/local/go, or $root/go-*: test/engine/build-engine.sh fetches one)" >&2; exit 1; }
want=$(stamp_of "$("$go" env GOVERSION)")
if [ -x "$bin" ] && [ "$(cat "$cache/stamp" 2>/dev/null)" = "$want" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
# Module and build caches beside the binary (nothing shared with the machine's Go caches);
# -mod=readonly: go.sum is the pin, nothing is resolved anew; -modcacherw lets rm -rf clean up.
export GOMODCACHE="$cache/gomod" GOCACHE="$cache/gobuild"
export GOFLAGS="-mod=readonly -modcacherw -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
start=$(date +%s)
echo "dendrite-config: building against dendrite $version into $cache (a cold build takes minutes)" >&2
if ! (cd "$here" && nice -n 19 "$go" build -trimpath -o "$bin.new" .) >"$cache/build.log" 2>&1; then
  echo "dendrite-config: the build failed; the end of $cache/build.log:" >&2
  tail -20 "$cache/build.log" >&2
  exit 1
fi
mv "$bin.new" "$bin"
echo "$want" >"$cache/stamp"
echo "dendrite-config: built in $(($(date +%s) - start))s" >&2
echo "$bin"
