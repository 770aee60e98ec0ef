#!/bin/sh
# As coturn/coturn docker/coturn/debian/rootfs/usr/local/bin/docker-entrypoint.sh: arguments that
# start with an option run turnserver with them. (Upstream also evaluates $(...) in its arguments,
# for its default `--external-ip=$(detect-external-ip)`; not reproduced, see the Dockerfile.)
case "${1:-}" in -*) set -- turnserver "$@" ;; esac
exec "$@"
