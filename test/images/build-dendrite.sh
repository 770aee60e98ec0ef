#!/usr/bin/env bash
# Builds Dendrite v0.13.8 (github.com/matrix-org/dendrite, the last release under Apache-2.0; the
# element-hq module, v0.14+, is AGPL and not used here) from the Go module proxy into
# ~/.cache/hardened-matrix/dendrite-v0.13.8/bin, once per version and script (stamp file).
# As the upstream Dockerfile at v0.13.8 builds it: `go build -trimpath ./cmd/...` with CGO_ENABLED=1
# on the native architecture (there against Alpine's musl, here against Debian 12's glibc, which the
# stand-in image is based on). Prints the bin directory.
set -euo pipefail
VERSION=v0.13.8
COMMANDS=(dendrite create-account generate-keys generate-config)
here=$(cd "$(dirname "$0")" && pwd)
out="${XDG_CACHE_HOME:-$HOME/.cache}/hardened-matrix/dendrite-$VERSION"
# Go >= 1.26: on PATH, /usr/local/go, or the toolchain test/engine/build-engine.sh fetched.
go=""
for g in "$(command -v go || true)" /usr/local/go/bin/go "${XDG_CACHE_HOME:-$HOME/.cache}"/hardened-matrix/go-*/bin/go; do
  if [ -z "$g" ] || [ ! -x "$g" ]; then continue; fi
  case "$("$g" env GOVERSION 2>/dev/null)" in go1.2[6-9]*|go1.[3-9][0-9]*) go=$g; break ;; esac
done
[ -n "$go" ] || { echo "build-dendrite.sh: no Go >= 1.26 (PATH, /usr/local/go, or test/engine/build-engine.sh's)" >&2; exit 3; }
mkdir -p "$(dirname "$out")"
# One build at a time (tests and CI may ask at once); the second waits and finds it built.
exec 9>"$out.lock"
flock 9
stamp="$VERSION $(sha256sum "$here/build-dendrite.sh" | cut -c1-16) $("$go" env GOVERSION)"
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ]; then echo "$out/bin"; exit 0; fi
rm -rf "$out" && mkdir -p "$out/bin.tmp"
start=$(date +%s)
pkgs=()
for c in "${COMMANDS[@]}"; do pkgs+=("github.com/matrix-org/dendrite/cmd/$c@$VERSION"); done
# Module and build caches of its own (a cold build is really cold, nothing shared with other users
# of the machine's Go caches), removed afterwards: only the binaries are kept.
GOMODCACHE="$out/gomod" GOCACHE="$out/gobuild" GOBIN="$out/bin.tmp" GOTOOLCHAIN=local CGO_ENABLED=1 \
  GOFLAGS="-trimpath -modcacherw" nice -n 19 "$go" install "${pkgs[@]}" >&2
rm -rf "$out/gomod" "$out/gobuild"
mv "$out/bin.tmp" "$out/bin"
echo "$stamp" >"$out/stamp"
echo "build-dendrite.sh: built Dendrite $VERSION in $(( $(date +%s) - start )) s" >&2
echo "$out/bin"
