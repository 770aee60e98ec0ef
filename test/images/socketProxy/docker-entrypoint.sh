#!/bin/sh
# As linuxserver/docker-socket-proxy root/docker-entrypoint.sh at 3.4.3-r0-ls91: the listener on
# IPv4 and IPv6 unless DISABLE_IPV6=1, the config written to /run/haproxy, HAProxy in the foreground.
set -e
mkdir -p /run/haproxy
if [ "${DISABLE_IPV6:-}" = 1 ]; then bind=":2375"; else bind="[::]:2375 v4v6"; fi
sed "s/@@BIND_PROTO@@/${bind}/g" /templates/haproxy.cfg >/run/haproxy/haproxy.cfg
exec /usr/sbin/haproxy -f /run/haproxy/haproxy.cfg -W -db
