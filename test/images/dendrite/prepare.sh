#!/usr/bin/env bash
# Puts Dendrite v0.13.8's binaries, built from the Go module proxy by test/images/build-dendrite.sh,
# into the build context.
set -euo pipefail
ctx=$1
bin=$("$(dirname "$0")/../build-dendrite.sh")
for c in dendrite create-account generate-keys generate-config; do install -m 755 "$bin/$c" "$ctx/$c"; done
