#!/usr/bin/env bash
# Builds Pulumi's own engine (the CLI) from the Go module proxy at one pinned version into a cache
# outside the repository, and reuses it while the version is unchanged (a stamp file).
#   test/engine/build-engine.sh          build if needed (minutes, cold), print the bin directory
#   test/engine/build-engine.sh --check  print the bin directory if built, else exit 1
#   PULUMI_ENGINE_VERSION=3.x.y ...      another version (its own cache directory)
# Nothing here is committed: sources come from the module proxy, the binary stays in the cache.
# (The whole script is one function, so editing it while a build runs cannot derail that build.)
set -euo pipefail

# Go 1.26 (pkg/v3 v3.276.0's go.mod says go 1.26.6). If the machine has none (the CI container is a
# plain debian:12), the toolchain comes from the Go module proxy as the go command itself fetches
# toolchains (module golang.org/toolchain), checked against its checksum-database hash pinned here.
DOCKER_TF_VERSION=v0.0.0-20260916201441-96d331c98ff4
GO_TOOLCHAIN=v0.0.1-go1.26.8.linux-amd64
GO_TOOLCHAIN_H1="h1:ZOmGe1OnfREDMIdb1Qi4G9JSuDPBLGExZMQ4nis1RXM="
ensure_go() {
  local have
  have=$(go env GOVERSION 2>/dev/null || true)
  case "$have" in go1.2[6-9]*|go1.[3-9][0-9]*) return 0 ;; esac
  local root="$1/go-$GO_TOOLCHAIN"
  if [ ! -x "$root/bin/go" ]; then
    [ "$(uname -sm)" = "Linux x86_64" ] || { echo "build-engine: no Go >= 1.26 here (found '${have:-none}'); install it" >&2; return 1; }
    echo "build-engine: fetching Go ($GO_TOOLCHAIN) from the module proxy" >&2
    local proxy="${GOPROXY:-https://proxy.golang.org}"
    proxy="${proxy%%[,|]*}"
    [ "$proxy" = direct ] || [ "$proxy" = off ] && proxy=https://proxy.golang.org
    python3 - "$proxy/golang.org/toolchain/@v/$GO_TOOLCHAIN.zip" "$GO_TOOLCHAIN_H1" "$root" "golang.org/toolchain@$GO_TOOLCHAIN/" <<'PY'
import base64, hashlib, io, os, stat, sys, urllib.request, zipfile
url, want, root, prefix = sys.argv[1:]
data = urllib.request.urlopen(url, timeout=600).read()
z = zipfile.ZipFile(io.BytesIO(data))
# golang.org/x/mod/sumdb/dirhash Hash1: sha256 over "<sha256 hex>  <name>\n" of every file, sorted by name.
lines = "".join(f"{hashlib.sha256(z.read(n)).hexdigest()}  {n}\n" for n in sorted(z.namelist()))
got = "h1:" + base64.b64encode(hashlib.sha256(lines.encode()).digest()).decode()
if got != want:
    sys.exit(f"Go toolchain zip hash {got} is not the pinned {want}")
tmp = root + ".tmp"
for n in z.namelist():
    if not n.startswith(prefix) or ".." in n.split("/"):
        sys.exit(f"unexpected file {n} in the toolchain zip")
    dest = os.path.join(tmp, n[len(prefix):])
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "wb") as f:
        f.write(z.read(n))
    # The zip records no modes: the go command makes bin/* and pkg/tool/*/* executable.
    rel = n[len(prefix):].split("/")
    if rel[0] == "bin" or (rel[0] == "pkg" and len(rel) > 1 and rel[1] == "tool"):
        os.chmod(dest, 0o755)
os.rename(tmp, root)
PY
  fi
  export PATH="$root/bin:$PATH"
}

main() {
  local version="${PULUMI_ENGINE_VERSION:-3.276.0}"
  local cache="${HARDENED_MATRIX_ENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hardened-matrix/pulumi-$version}"
  local bin="$cache/bin" stamp="$cache/stamp" log="$cache/build.log"
  # The stamp names what was built: a changed version or recipe rebuilds.
  local recipe=4
  local want="pulumi $version recipe $recipe"

  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$bin/pulumi" ]; then
    echo "$bin"
    return 0
  fi
  [ "${1:-}" = "--check" ] && return 1
  ensure_go "$(dirname "$cache")"

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
    # The Terraform docker provider's source (the one upstream of the simulated docker provider the
    # module proxy serves), for test/engineSchema.test.ts to check the ForceNew table against.
    go mod download "github.com/kreuzwerker/terraform-provider-docker@$DOCKER_TF_VERSION"
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
