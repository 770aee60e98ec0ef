#!/usr/bin/env bash
# Builds Traefik (github.com/traefik/traefik/v3 cmd/traefik, the release's main package) at the
# version the stacks deploy, from the Go module proxy, into a cache outside the repository, reused
# while the version and this script are unchanged (a stamp file).
#   test/images/build-traefik.sh          build if needed (minutes, cold), print the binary's path
#   test/images/build-traefik.sh --check  print the binary's path if built, else exit 1
# Cold (measured here, 2026-12, empty caches): 333 modules (1.5 GB) from the proxy in 2.5 min, and
# 9.6 CPU-minutes in all (34 min wall on this 2-core machine at load 27; idle, an estimated 8); warm
# (stamp matches) it only prints the path; after an edit of this script, with the Go build cache
# kept beside the binary, under a minute.
# Nothing here is committed: sources come from the module proxy, the binary stays in the cache.
#
# What differs from the upstream release binary (traefik/traefik v3.7.13 .goreleaser.yml.tmpl:
# CGO_ENABLED=0, -trimpath, -s -w, version/codename/date by -X; `make generate-webui` first):
# 1. github.com/abbot/go-http-auth: traefik's go.mod replaces it with the fork
#    github.com/containous/go-http-auth v0.4.1-0.20260804094822-b975dcaa8c48 (traefik PR #13636),
#    and the proxy refuses every version of the fork:
#      github.com/containous/go-http-auth@v0.4.1-0.20260804094822-b975dcaa8c48: reading https://proxy.golang.org/github.com/containous/go-http-auth/@v/v0.4.1-0.20260804094822-b975dcaa8c48.zip: 403 Forbidden
#    (…/@v/list: "This module version is not available."). The closest real code is the library the
#    fork comes from, abbot/go-http-auth at its newest commit the proxy serves
#    (v0.4.1-0.20220112235402-e1cee1c72f2f), plus the one method the fork adds that Traefik calls,
#    DigestAuth.RequireAuthStale, here answering a stale nonce with a new challenge as RequireAuth
#    does (what the fork answers is unknown: its source is not served). Only Traefik's basicAuth/digestAuth middlewares use
#    the library; this project uses basicAuth, on the dashboard (stacks with the dashboard on), only.
# 2. Six of lego's DNS-01 providers (of about 180) are not built: the proxy refuses the cloud SDK each one
#    imports (`go build` error lines, 2026-12):
#      github.com/akamai/AkamaiOPEN-edgegrid-golang/v13@v13.4.0: reading https://proxy.golang.org/github.com/akamai/%21akamai%21o%21p%21e%21n-edgegrid-golang/v13/@v/v13.4.0.zip: 403 Forbidden
#      github.com/huaweicloud/huaweicloud-sdk-go-v3@v0.1.213: reading https://proxy.golang.org/github.com/huaweicloud/huaweicloud-sdk-go-v3/@v/v0.1.213.zip: 403 Forbidden
#      github.com/nrdcg/oci-go-sdk/common/v1065@v1065.124.0: reading https://proxy.golang.org/github.com/nrdcg/oci-go-sdk/common/v1065/@v/v1065.124.0.zip: 403 Forbidden
#      github.com/nrdcg/oci-go-sdk/dns/v1065@v1065.124.0: reading https://proxy.golang.org/github.com/nrdcg/oci-go-sdk/dns/v1065/@v/v1065.124.0.zip: 403 Forbidden
#      github.com/sacloud/sacloud-sdk-go@v0.1.0: reading https://proxy.golang.org/github.com/sacloud/sacloud-sdk-go/@v/v0.1.0.zip: 403 Forbidden
#      github.com/ucloud/ucloud-sdk-go@v0.22.116: reading https://proxy.golang.org/github.com/ucloud/ucloud-sdk-go/@v/v0.22.116.zip: 403 Forbidden
#      github.com/yandex-cloud/go-sdk/services/dns@v0.0.94: reading https://proxy.golang.org/github.com/yandex-cloud/go-sdk/services/dns/@v/v0.0.94.zip: 403 Forbidden
#    Their packages (lego providers/dns/{edgedns,huaweicloud,oraclecloud,sakuracloud,ucloud,yandexcloud})
#    are replaced, in a copy of lego's module used through a replace directive, by a stub whose
#    NewDNSProvider returns an error naming the refused module: `dnsChallenge.provider` set to one
#    of them fails at startup, as a mistyped provider does. This project uses `cloudflare` (DNS-01,
#    components/render/traefik.ts) or the HTTP-01 challenge: both are lego's real code here.
# 3. github.com/traefik/traefik/dynamic/ext: a nested module of traefik/traefik
#    (pkg/config/dynamic/ext, `replace … => ./pkg/config/dynamic/ext`), so not in the module zip and
#    not on the proxy under its path. Upstream it is four empty extension types (HTTP, Router,
#    RouterIng and RouterIng.ToRouter); the same four are written here.
# 4. The web UI's assets (webui/static, built by `yarn build` in the release) are not in the module
#    zip: the dashboard page serves no assets. The API (api@internal) is the real code.
# 5. Version string 3.7.13 and codename langres as the release's (.github/workflows/release.yaml);
#    the build date is the tagged commit's time (the release's is its build time).
# Everything else, every provider, middleware and entrypoint feature this project's config uses
# (file and swarm providers, ACME HTTP-01 and Cloudflare DNS-01, TLS options, headers, forwardAuth,
# ipAllowList, redirections, access log, ping and healthcheck), is upstream's code unchanged.
# (The whole script is one function, so editing it while a build runs cannot derail that build.)
set -euo pipefail

main() {
  local version="${TRAEFIK_VERSION:-v3.7.13}"
  local cache="${HARDENED_MATRIX_TRAEFIK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hardened-matrix/traefik-$version}"
  local bin="$cache/traefik" stamp="$cache/stamp" log="$cache/build.log"
  # The stamp names what was built: another version or another recipe (this script) rebuilds.
  local want
  want="traefik $version script $(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"

  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$bin" ]; then
    echo "$bin"
    return 0
  fi
  [ "${1:-}" = "--check" ] && return 1
  # Go >= 1.26 (traefik v3.7.13's go.mod: go 1.26.0): the machine's, or the toolchain that
  # test/engine/build-engine.sh fetched from the module proxy (.ci/run runs it first).
  local g
  case "$(go env GOVERSION 2>/dev/null || true)" in
    go1.2[6-9]*|go1.[3-9][0-9]*) ;;
    *) for g in "${XDG_CACHE_HOME:-$HOME/.cache}"/hardened-matrix/go-v*/bin/go; do [ -x "$g" ] && export PATH="${g%/go}:$PATH"; done ;;
  esac
  case "$(go env GOVERSION 2>/dev/null || true)" in
    go1.2[6-9]*|go1.[3-9][0-9]*) ;;
    *) echo "build-traefik: no Go >= 1.26 here (run test/engine/build-engine.sh, which fetches it, or install it)" >&2; return 1 ;;
  esac

  rm -rf "$cache/src"
  mkdir -p "$cache/src/ext"
  # Module and build caches beside the binary (as test/engine/build-engine.sh): a cold build is
  # really cold, nothing is written to the machine's shared Go caches, and `rm -rf` removes it all.
  export GOMODCACHE="$cache/gomod" GOCACHE="$cache/gobuild"
  export GOFLAGS="-mod=mod -modcacherw -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0

  # (3) the dynamic/ext extension module, as upstream's.
  printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24.0\n' > "$cache/src/ext/go.mod"
  cat > "$cache/src/ext/ext.go" <<'GO'
// Package ext: traefik/traefik pkg/config/dynamic/ext (a nested module, not in the module zip).
package ext

// HTTP is a dynamic.HTTP extension.
type HTTP struct{}

// Router is a dynamic.Router extension.
type Router struct{}

// RouterIng is a RouterIng extension for ingress provider annotations.
type RouterIng struct{}

// ToRouter converts RouterIng to a Router.
func (r RouterIng) ToRouter() Router { return Router{} }
GO
  # `go install pkg@version` refuses a module with replace directives: build from a module of our
  # own that requires traefik and repeats its replaces (traefik go.mod v3.7.13): dynamic/ext
  # (above), gorilla/mux => containous/mux (served), abbot/go-http-auth => the fork (refused: (1)).
  cat > "$cache/src/go.mod" <<MOD
module hardened-matrix.invalid/traefik

go 1.26.0

require github.com/traefik/traefik/v3 $version

replace github.com/traefik/traefik/dynamic/ext => ./ext

replace (
	github.com/abbot/go-http-auth => github.com/abbot/go-http-auth v0.4.1-0.20220112235402-e1cee1c72f2f
	github.com/gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59
)
MOD
  rm -f "$cache/src/go.sum"

  local start
  start=$(date +%s)
  echo "build-traefik: building traefik $version into $bin (a cold build takes minutes; log: $log)" >&2
  # (A subshell tested by `if` would run with errexit off: run it, then test its status.)
  local rc=0
  set +e
  (
    set -euo pipefail
    cd "$cache/src"
    echo "== $(date -u +%FT%TZ) building $want"
    # (2) lego's refused DNS providers: a copy of lego's module (the overlay flag may not touch
    # the module cache) in which each one's package is a stub, used through a replace.
    go mod download github.com/traefik/traefik/v3 github.com/go-acme/lego/v5
    local lego p refused
    lego=$(go list -m -f '{{.Dir}}' github.com/go-acme/lego/v5)
    cp -r "$lego" lego
    chmod -R u+w lego
    for p in edgedns:github.com/akamai/AkamaiOPEN-edgegrid-golang/v13 huaweicloud:github.com/huaweicloud/huaweicloud-sdk-go-v3 \
      oraclecloud:github.com/nrdcg/oci-go-sdk sakuracloud:github.com/sacloud/sacloud-sdk-go \
      ucloud:github.com/ucloud/ucloud-sdk-go yandexcloud:github.com/yandex-cloud/go-sdk; do
      refused=${p#*:}
      p=${p%%:*}
      [ -d "lego/providers/dns/$p" ] || { echo "lego has no providers/dns/$p: revisit this list" >&2; exit 1; }
      rm -rf "lego/providers/dns/$p"
      mkdir "lego/providers/dns/$p"
      cat > "lego/providers/dns/$p/$p.go" <<GO
// Package $p is not built (hardened-matrix test/images/build-traefik.sh): the Go module proxy
// refuses $refused, which lego's $p provider imports.
package $p

import (
	"context"
	"errors"
)

type DNSProvider struct{}

func NewDNSProvider() (*DNSProvider, error) {
	return nil, errors.New("$p: DNS provider not built (the Go module proxy refuses $refused)")
}

func (*DNSProvider) Present(context.Context, string, string, string) error { return errors.ErrUnsupported }

func (*DNSProvider) CleanUp(context.Context, string, string, string) error { return errors.ErrUnsupported }
GO
    done
    printf '\nreplace github.com/go-acme/lego/v5 => ./lego\n' >> go.mod

    # (1) the fork adds DigestAuth.RequireAuthStale (pkg/middlewares/auth/digest_auth.go calls it on
    # a stale nonce): a copy of abbot/go-http-auth with that method answering as RequireAuth does.
    go mod download github.com/abbot/go-http-auth
    cp -r "$(go list -m -f '{{.Dir}}' github.com/abbot/go-http-auth)" go-http-auth
    chmod -R u+w go-http-auth
    cat > go-http-auth/hardened_matrix_stale.go <<'GO'
package auth

import "net/http"

// RequireAuthStale (containous/go-http-auth, refused by the module proxy): a new challenge, as RequireAuth.
func (da *DigestAuth) RequireAuthStale(w http.ResponseWriter, r *http.Request) { da.RequireAuth(w, r) }
GO
    sed -i 's#^\tgithub.com/abbot/go-http-auth => .*#\tgithub.com/abbot/go-http-auth => ./go-http-auth#' go.mod
    grep -q '=> ./go-http-auth' go.mod

    local date
    date=$(go list -m -f '{{.Time}}' github.com/traefik/traefik/v3 | cut -c1-19 | tr ' ' T)Z
    # Lowest priority: the machine's cores are shared.
    nice -n 19 go build -trimpath \
      -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=${version#v} -X github.com/traefik/traefik/v3/pkg/version.Codename=langres -X github.com/traefik/traefik/v3/pkg/version.BuildDate=$date" \
      -o "$bin.new" github.com/traefik/traefik/v3/cmd/traefik
    mv "$bin.new" "$bin"
    echo "== built in $(( $(date +%s) - start ))s"
  ) >>"$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    echo "build-traefik: the build failed; the end of $log:" >&2
    tail -20 "$log" >&2
    return 1
  fi
  "$bin" version >/dev/null
  echo "$want" > "$stamp"
  echo "build-traefik: built in $(( $(date +%s) - start ))s" >&2
  echo "$bin"
}

main "$@"
exit $?
