#!/usr/bin/env bash
# The base every stand-in image is built FROM: Debian 12 (bookworm) minbase, as the official
# debian:bookworm-slim is (docker-library/debian, made by debuerreotype from the same archive), from
# deb.debian.org. Usage: build-rootfs.sh ROOTFS_DIR (empty or absent). Runs as root (debootstrap).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rootfs=$1
debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >&2
# The apt sources of this machine (bookworm, -updates, -security), so images get security fixes.
rm -f "$rootfs/etc/apt/sources.list"
install -m 644 "$here/debian.sources" "$rootfs/etc/apt/sources.list.d/debian.sources"
# As debuerreotype's slim images: no docs, man pages or locales; apt keeps no downloaded .debs.
install -m 644 "$here/dpkg-slim" "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim"
install -m 644 "$here/apt-clean" "$rootfs/etc/apt/apt.conf.d/docker-clean"
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
  "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
# As debuerreotype's images: package scripts start no services in an image build.
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 755 "$rootfs/usr/sbin/policy-rc.d"
# A directory made by mktemp is 0700: imported as is, non-root users could not enter /.
chmod 755 "$rootfs"
