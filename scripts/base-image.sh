#!/usr/bin/env bash
# Make a Debian bookworm base image with python3.11 from Debian's packages
# alone (debootstrap + `buildah from scratch`), for building the Dockerfile
# where no image registry is reachable:
#
#   scripts/base-image.sh [NAME]      (default localhost/fastmesh-base:bookworm)
#   buildah bud --build-arg BASE=localhost/fastmesh-base:bookworm -t fastmesh .
#
# Needs root, debootstrap and buildah. Does nothing if the image exists.
set -euo pipefail
name="${1:-localhost/fastmesh-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if buildah inspect --type image "$name" >/dev/null 2>&1; then
    echo "$name exists"
    exit 0
fi
rootfs="$(mktemp -d /var/tmp/fastmesh-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
# minbase: dpkg, apt, passwd (useradd) and the essentials; python3 is 3.11 in bookworm.
debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
ctr="$(buildah from scratch)"
trap 'rm -rf "$rootfs"; buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah copy --quiet "$ctr" "$rootfs" / >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /bin/bash "$ctr"
buildah commit --quiet "$ctr" "$name" >/dev/null
echo "$name built"
