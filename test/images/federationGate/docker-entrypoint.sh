#!/bin/sh
# As nodejs/docker-node docker-entrypoint.sh: an option, or a first word that is neither a command
# nor an executable, is an argument of node.
set -e
if [ "${1#-}" != "${1:-}" ] || [ -z "$(command -v "${1:-}" 2>/dev/null)" ] || { [ -f "${1:-}" ] && ! [ -x "${1:-}" ]; }; then
  set -- node "$@"
fi
exec "$@"
