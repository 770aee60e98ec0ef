#!/usr/bin/env bash
# prepare.sh CONTEXT_DIR: copies the Traefik binary built by test/images/build-traefik.sh into the
# image's build context. Exit 3 when it is not built (run test/images/build-traefik.sh first).
set -euo pipefail
ctx=${1:?usage: prepare.sh CONTEXT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
bin=$("$here/../build-traefik.sh" --check) || { echo "traefik: not built (run test/images/build-traefik.sh)" >&2; exit 3; }
install -m 0755 "$bin" "$ctx/traefik"
# (build-images.sh copies this directory into the context; another driver may not.)
[ -f "$ctx/entrypoint.sh" ] || install -m 0755 "$here/entrypoint.sh" "$ctx/entrypoint.sh"
