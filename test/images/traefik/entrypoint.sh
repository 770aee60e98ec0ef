#!/bin/sh
# The official image's entrypoint, same behaviour (traefik/traefik-library-image
# v3.7/alpine/entrypoint.sh): flags alone run traefik with them; a Traefik subcommand
# (`version`, `healthcheck`, ...) runs through traefik; anything else runs as given.
set -e

case "$1" in
  -*) set -- traefik "$@" ;;
esac

if traefik "$1" --help >/dev/null 2>&1; then
  set -- traefik "$@"
else
  echo "= '$1' is not a Traefik command: assuming shell execution." 1>&2
fi

exec "$@"
