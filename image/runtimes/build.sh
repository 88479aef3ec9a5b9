#!/usr/bin/env bash
# One image of three real model servers, built as the operator's image is (image/build.sh): no
# Docker, no base image from a registry. Debian bookworm's Python 3.11 (mmdebstrap), a venv
# /opt/runtimes holding exactly requirements.txt (MLServer with its scikit-learn runtime,
# DEEPaaS, MLflow's scoring server from mlflow-skinny) and this folder's package, the iris
# models trained inside the root at build time from scikit-learn's bundled data, packed as a
# one-layer OCI image (umoci) that runs as uid 10001. README.md says how a template runs each.
#
#   image/runtimes/build.sh LAYOUT [TAG]     → the OCI layout directory LAYOUT holds TAG
#
# Needs root, mmdebstrap, umoci and python3 (3.11) with pip. Wheels come from a wheelhouse in
# WHEELS (default .cache/runtime-wheels/) keyed by requirements.txt's hash: only a cold build
# asks PyPI. MIRROR picks the Debian mirror (default: this machine's apt sources). Push it with
#   skopeo copy oci:LAYOUT:TAG docker://REGISTRY/modelyard/runtimes:TAG
set -euo pipefail
layout=$(realpath -m "$1")
tag=${2:-dev}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

# The wheelhouse: every pinned package as a wheel for this Python and libc (bookworm's glibc
# 2.36 here), kept per lock so that a warm build reads no index.
key=$(sha256sum "$here/requirements.txt" | cut -c1-16)
wheels=${WHEELS:-$root/.cache/runtime-wheels}/$key
if [ ! -e "$wheels/complete" ]; then
  step "wheels: building the wheelhouse $wheels"
  rm -rf "$wheels"
  mkdir -p "$wheels"
  env -u PIP_FIND_LINKS python3 -m pip wheel --quiet --no-deps --wheel-dir "$wheels" \
    -r "$here/requirements.txt"
  touch "$wheels/complete"
fi

mirror=${MIRROR:-}
if [ -z "$mirror" ]; then
  for sources in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -s "$sources" ]; then mirror=$sources; break; fi
  done
fi
rootfs=$work/rootfs
step "mmdebstrap: bookworm"
# merged-usr's hook: without it apt pulls usrmerge and a whole perl into the root.
# libstdc++6: numpy's and grpcio's wheels link it and do not vendor it.
# shellcheck disable=SC2086 # an empty mirror means mmdebstrap's default
mmdebstrap --quiet --variant=essential --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=python3,python3-venv,ca-certificates,libstdc++6 \
  --dpkgopt='path-exclude=/usr/share/{doc,man,info,locale}/*' \
  bookworm "$rootfs" $mirror

step "venv: installing requirements.txt and modelyard-runtimes without an index"
mkdir "$rootfs/wheels" "$rootfs/src"
cp "$wheels"/*.whl "$here/requirements.txt" "$rootfs/wheels/"
cp -r "$here/pyproject.toml" "$here/modelyard_runtimes" "$rootfs/src/"
find "$rootfs/src" -name __pycache__ -type d -prune -exec rm -rf {} +
inside() { chroot "$rootfs" env -i PATH=/opt/runtimes/bin:/usr/bin:/bin HOME=/root "$@"; }
inside python3 -m venv /opt/runtimes
inside pip install --quiet --no-index --find-links /wheels -r /wheels/requirements.txt
# The venv's own setuptools builds the package: no build isolation, so no index.
inside pip install --quiet --no-index --no-deps --no-build-isolation /src
inside pip check

step "train: the iris models, inside the root"
inside python -m modelyard_runtimes.train /opt/models

# What only installing needed: pip, the wheels and sources, apt's lists, test suites (of the
# standard library and of every package). Bytecode stays: a non-root pod cannot write it, and
# compiling pandas, scikit-learn and MLflow at every start would slow the first answer.
site=$rootfs/opt/runtimes/lib/python3.11/site-packages
rm -rf "$rootfs/wheels" "$rootfs/src" "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/* \
  "$site"/pip "$site"/pip-*.dist-info "$rootfs"/opt/runtimes/bin/pip* \
  "$rootfs"/usr/lib/python3.11/test "$rootfs"/usr/lib/python3.11/ensurepip \
  "$rootfs"/usr/lib/python3.11/lib2to3 "$rootfs"/usr/lib/python3.11/idlelib
find "$site" -mindepth 2 -type d -name tests -prune -exec rm -rf {} +
# The user every runtime runs as: uid 10001, with a home it can write (MLServer's metrics and
# MLflow's downloads go under the working directory and /tmp).
echo "runtimes:x:10001:10001::/home/runtimes:/usr/sbin/nologin" >>"$rootfs/etc/passwd"
echo "runtimes:x:10001:" >>"$rootfs/etc/group"
install -d -m 0755 -o 10001 -g 10001 "$rootfs/home/runtimes"

step "umoci: packing $layout:$tag"
[ -d "$layout" ] || umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$work/bundle" >/dev/null
rm -rf "$work/bundle/rootfs"
mv "$rootfs" "$work/bundle/rootfs"
umoci repack --image "$layout:$tag" "$work/bundle"
# No entrypoint: a template gives each runtime's command (README.md). The default command
# serves the scikit-learn model over the Open Inference Protocol.
umoci config --image "$layout:$tag" --config.user 10001:10001 \
  --config.env PATH=/opt/runtimes/bin:/usr/bin:/bin --config.env HOME=/home/runtimes \
  --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 \
  --config.exposedports 8080/tcp \
  --config.cmd /opt/runtimes/bin/mlserver --config.cmd start --config.cmd /opt/models/mlserver \
  --config.workingdir /home/runtimes --architecture amd64 --os linux
umoci gc --layout "$layout"
step "done"
