#!/usr/bin/env bash
# Builds the stand-in images the tests deploy: the real programs (Debian's packages, Node.js from
# npm, Dendrite and Traefik from the Go module proxy) in images tagged exactly as
# components/settings.ts DEFAULT_IMAGES pins them, so the plan deploys unchanged. No registry is
# reachable here: every image is built FROM a Debian 12 minbase made by debootstrap.
#
# Each image is a directory test/images/<DEFAULT_IMAGES key>/ holding a Dockerfile, optionally a
# `packages` file (Debian packages, pinned to this machine's apt candidate versions and passed as
# the DEB_PACKAGES build argument) and a `prepare.sh CONTEXT_DIR` that puts the files it needs into
# the build context (exit 3: not available here; the image is skipped and said so).
#
# Cached as `docker save` archives under ~/.cache/hardened-matrix/images-<name>-<key>/image.tar, the
# key a hash of every input (the recipe directory, test/images/build-<name>.sh, the tag, the Debian
# package versions, the base's recipe and debootstrap version): rebuilt only when one changes.
# The builds run in a private dockerd of this script's own (data-root, exec-root, socket under a
# temporary directory, no bridge, no iptables; RUN steps use the host's network for apt).
#
# Usage: build-images.sh [--list] [NAME...]   (needs root: debootstrap, dockerd)
# Prints one line per image on stdout: NAME<TAB>TAG<TAB>ARCHIVE (ARCHIVE "-" when skipped or, with
# --list, not built yet). Progress and timings go to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/hardened-matrix"
BASE_TAG=hardened-matrix-base:bookworm
ALL=(postgres coturn socketProxy restic lego federationGate dendrite traefik)

list_only=0
names=()
for a in "$@"; do
  case "$a" in
    --list) list_only=1 ;;
    -*) echo "build-images.sh: unknown option $a" >&2; exit 2 ;;
    *) names+=("$a") ;;
  esac
done
[ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")

log() { echo "build-images.sh: $*" >&2; }
hash16() { sha256sum | cut -c1-16; }

# The pinned tag, read from the one place the program pins it.
tag_of() {
  sed -n '/^export const DEFAULT_IMAGES = {/,/^};/p' "$repo/components/settings.ts" |
    sed -n "s/^  $1: \"\([^\"]*\)\",\$/\1/p"
}

# Every file of a directory, names and contents, in a stable order.
dir_digest() {
  (cd "$1" && find . -type f ! -name '*.tar' -print0 | LC_ALL=C sort -z | xargs -0r sha256sum)
}

base_key=$( {
  dir_digest "$here/base"
  dpkg-query -W -f '${Package} ${Version}\n' debootstrap 2>/dev/null || echo "debootstrap ?"
} | hash16)
base_archive="$cache/images-base-$base_key/base.tar"

# Debian packages of a recipe as name=version (this machine's apt candidates, after apt-get update),
# from one `apt-cache policy` over every recipe's packages (one call costs seconds on a busy machine).
declare -A candidate=()
load_candidates() {
  local all=() p pkg="" line
  for p in "$here"/*/packages; do
    [ -f "$p" ] || continue
    while read -r line; do line=${line%%#*}; for pkg in $line; do all+=("$pkg"); done; done <"$p"
  done
  [ ${#all[@]} -gt 0 ] || return 0
  pkg=""
  while IFS= read -r line; do
    case "$line" in
      [!\ ]*:) pkg=${line%:} ;;
      *"Candidate: "*) candidate[$pkg]=${line##*Candidate: } ;;
    esac
  done < <(apt-cache policy "${all[@]}" 2>/dev/null)
}
load_candidates
deb_packages() {
  local f="$1/packages" p v line out=()
  [ -f "$f" ] || return 0
  while read -r line; do
    line=${line%%#*}
    for p in $line; do
      v=${candidate[$p]:-}
      if [ -z "$v" ] || [ "$v" = "(none)" ]; then
        log "$1: Debian package $p has no candidate version here (run apt-get update)"; return 1
      fi
      out+=("$p=$v")
    done
  done <"$f"
  echo "${out[*]}"
}

image_key() { # name, tag, packages
  {
    echo "base $base_key"; echo "tag $2"; echo "packages $3"
    dir_digest "$here/$1"
    [ ! -f "$here/build-$1.sh" ] || sha256sum "$here/build-$1.sh"
  } | hash16
}

# --- the private engine, started on first need ---
engine_dir=""
engine_pid=""
dk() { docker -H "unix://$engine_dir/docker.sock" "$@"; }
stop_engine() {
  if [ -n "$engine_pid" ] && kill -0 "$engine_pid" 2>/dev/null; then
    kill -TERM "$engine_pid" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$engine_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$engine_pid" 2>/dev/null || true
  fi
  if [ -n "$engine_dir" ]; then
    # dockerd leaves its netns mount point (exec-root/netns/default) mounted.
    findmnt -rn -o TARGET | grep -F "$engine_dir/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    # vfs layers can hold read-only directories; make them removable first.
    chmod -R u+w "$engine_dir" 2>/dev/null || true
    rm -rf "$engine_dir"
  fi
}
trap stop_engine EXIT
start_engine() {
  [ -z "$engine_dir" ] || return 0
  [ "$(id -u)" -eq 0 ] || { log "needs root (debootstrap, a private dockerd)"; exit 1; }
  engine_dir=$(mktemp -d /tmp/hm-images.XXXXXX)
  # overlay2 where the kernel and filesystem allow it (here: ext4), else vfs (a full copy per layer).
  local driver
  for driver in overlay2 vfs; do
    cat >"$engine_dir/daemon.json" <<JSON
{
  "storage-driver": "$driver",
  "bridge": "none",
  "iptables": false,
  "ip6tables": false,
  "ip-masq": false,
  "deprecated-key-path": "$engine_dir/key.json",
  "cgroup-parent": "hm-images",
  "log-level": "warn"
}
JSON
    dockerd --config-file "$engine_dir/daemon.json" --data-root "$engine_dir/data" --exec-root "$engine_dir/x" \
      --pidfile "$engine_dir/docker.pid" -H "unix://$engine_dir/docker.sock" >>"$engine_dir/dockerd.log" 2>&1 9>&- &
    engine_pid=$!
    for _ in $(seq 1 300); do
      if [ -S "$engine_dir/docker.sock" ] && dk version >/dev/null 2>&1; then return 0; fi
      kill -0 "$engine_pid" 2>/dev/null || break
      sleep 0.2
    done
    log "the private dockerd did not start with storage driver $driver:"; tail -n 20 "$engine_dir/dockerd.log" >&2
    kill -TERM "$engine_pid" 2>/dev/null || true; wait "$engine_pid" 2>/dev/null || true
    rm -rf "$engine_dir/data" "$engine_dir/x" "$engine_dir/docker.sock"
  done
  exit 1
}

ensure_base() {
  start_engine
  if [ ! -f "$base_archive" ]; then
    local t0 rootfs; t0=$(date +%s)
    rootfs="$engine_dir/rootfs"
    log "base: debootstrap --variant=minbase bookworm"
    "$here/base/build-rootfs.sh" "$rootfs"
    tar -C "$rootfs" -c . | dk import - "$BASE_TAG" >/dev/null
    rm -rf "$rootfs"
    mkdir -p "$(dirname "$base_archive")"
    dk save -o "$base_archive.tmp" "$BASE_TAG" && mv "$base_archive.tmp" "$base_archive"
    for old in "$cache"/images-base-*; do [ "$old" = "$(dirname "$base_archive")" ] || rm -rf "$old"; done
    log "base: built in $(( $(date +%s) - t0 )) s"
  elif ! dk image inspect "$BASE_TAG" >/dev/null 2>&1; then
    dk load -q -i "$base_archive" >/dev/null
  fi
}

build_image() { # name, tag, packages, archive
  local name=$1 tag=$2 pkgs=$3 archive=$4 ctx t0 rc
  ensure_base
  t0=$(date +%s)
  ctx="$engine_dir/ctx-$name"
  cp -a "$here/$name" "$ctx"
  if [ -x "$here/$name/prepare.sh" ]; then
    rc=0; "$here/$name/prepare.sh" "$ctx" >&2 || rc=$?
    if [ "$rc" -eq 3 ]; then log "$name: SKIPPED, not available here (prepare.sh exit 3)"; return 3; fi
    [ "$rc" -eq 0 ] || { log "$name: prepare.sh failed (exit $rc)"; return 1; }
  fi
  log "$name: building $tag"
  DOCKER_BUILDKIT=0 dk build -q --network host --build-arg "DEB_PACKAGES=$pkgs" -t "$tag" "$ctx" >/dev/null
  mkdir -p "$(dirname "$archive")"
  dk save -o "$archive.tmp" "$tag" && mv "$archive.tmp" "$archive"
  for old in "$cache/images-$name"-*; do [ "$old" = "$(dirname "$archive")" ] || rm -rf "$old"; done
  rm -rf "$ctx"
  log "$name: built in $(( $(date +%s) - t0 )) s"
}

if [ "$list_only" -eq 0 ]; then
  # One builder at a time (tests and CI may ask at once); the second waits and finds the archives.
  mkdir -p "$cache"
  exec 9>"$cache/images.lock"
  flock 9
fi

failed=0
for name in "${names[@]}"; do
  tag=$(tag_of "$name")
  [ -n "$tag" ] || { log "$name: not a key of DEFAULT_IMAGES in components/settings.ts"; exit 2; }
  if [ ! -f "$here/$name/Dockerfile" ]; then
    log "$name: SKIPPED, no recipe (test/images/$name/Dockerfile)"; printf '%s\t%s\t-\n' "$name" "$tag"; continue
  fi
  pkgs=$(deb_packages "$here/$name")
  key=$(image_key "$name" "$tag" "$pkgs")
  archive="$cache/images-$name-$key/image.tar"
  if [ ! -f "$archive" ] && [ "$list_only" -eq 0 ]; then
    rc=0; build_image "$name" "$tag" "$pkgs" "$archive" || rc=$?
    if [ "$rc" -eq 3 ]; then printf '%s\t%s\t-\n' "$name" "$tag"; continue; fi
    [ "$rc" -eq 0 ] || { failed=1; log "$name: FAILED"; printf '%s\t%s\t-\n' "$name" "$tag"; continue; }
  fi
  if [ -f "$archive" ]; then printf '%s\t%s\t%s\n' "$name" "$tag" "$archive"; else printf '%s\t%s\t-\n' "$name" "$tag"; fi
done
exit "$failed"
