#!/usr/bin/env bash
# The operator image without Docker or a base image from a registry: Debian bookworm's Python 3.11
# (mmdebstrap), the package built from this checkout installed into a venv, packed as a one-layer
# OCI image (umoci) — the same package, user and entrypoint as the Dockerfile's image.
#
#   image/build.sh LAYOUT [TAG]     → the OCI layout directory LAYOUT holds modelyard:TAG
#
# Needs root (or fakeroot-less unshare), mmdebstrap, umoci and python3 with pip; MIRROR picks
# the Debian mirror (default: this machine's apt sources). Push it with skopeo:
#   skopeo copy oci:LAYOUT:TAG docker://REGISTRY/modelyard:TAG
set -euo pipefail
layout=$(realpath -m "$1")
tag=${2:-dev}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mirror=${MIRROR:-}
if [ -z "$mirror" ]; then
  for sources in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -s "$sources" ]; then mirror=$sources; break; fi
  done
fi
rootfs=$work/rootfs
# shellcheck disable=SC2086 # an empty mirror means mmdebstrap's default
mmdebstrap --quiet --variant=essential --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/{doc,man,info,locale}/*' \
  bookworm "$rootfs" $mirror

# Wheels of the package and its dependencies, built here for the image's Python (the same
# minor version as this machine's), installed without network access inside the root.
python3 -m pip wheel --quiet --wheel-dir "$rootfs/wheels" "$root"
chroot "$rootfs" python3 -m venv /opt/modelyard
chroot "$rootfs" env -u PIP_FIND_LINKS /opt/modelyard/bin/pip install --quiet --no-index \
  --no-compile --find-links /wheels modelyard
# What only installing needed: pip and setuptools, apt's lists, the standard library's tests.
site=$rootfs/opt/modelyard/lib/python3.11/site-packages
rm -rf "$rootfs/wheels" "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/* \
  "$site"/pip* "$site"/setuptools* "$site"/_distutils_hack "$site"/pkg_resources \
  "$site"/distutils-precedence.pth "$rootfs"/opt/modelyard/bin/pip* \
  "$rootfs"/usr/lib/python3.11/test "$rootfs"/usr/lib/python3.11/ensurepip \
  "$rootfs"/usr/lib/python3.11/lib2to3 "$rootfs"/usr/lib/python3.11/idlelib
find "$rootfs" -name __pycache__ -type d -prune -exec rm -rf {} +
# The Dockerfile's user: uid 10001, no home, no shell.
echo "modelyard:x:10001:10001::/nonexistent:/usr/sbin/nologin" >>"$rootfs/etc/passwd"
echo "modelyard:x:10001:" >>"$rootfs/etc/group"

[ -d "$layout" ] || umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$work/bundle" >/dev/null
rm -rf "$work/bundle/rootfs"
mv "$rootfs" "$work/bundle/rootfs"
umoci repack --image "$layout:$tag" "$work/bundle"
umoci config --image "$layout:$tag" --config.user 10001:10001 \
  --config.env PATH=/opt/modelyard/bin:/usr/bin:/bin \
  --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 \
  --config.exposedports 8000/tcp --config.exposedports 8080/tcp \
  --config.entrypoint /opt/modelyard/bin/modelyard --config.cmd run \
  --config.workingdir / --architecture amd64 --os linux
umoci gc --layout "$layout"
