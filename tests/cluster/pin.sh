#!/usr/bin/env bash
# Pin the test control plane to one Kubernetes release: k8s.io/kubernetes vX.Y.Z and every
# staging module (k8s.io/api, k8s.io/client-go, ...) at the matching v0.Y.Z, then tidy.
#   ./pin.sh v1.37.2
set -euo pipefail
cd "$(dirname "$0")"
version="${1:?usage: pin.sh v1.X.Y}"
staging="v0.${version#v1.}"
sed -i -E \
  -e "s#^(\s*k8s\.io/kubernetes) v[^ ]+\$#\1 ${version}#" \
  -e "s#^(\s*k8s\.io/[a-z0-9-]+ => k8s\.io/[a-z0-9-]+) v[^ ]+\$#\1 ${staging}#" \
  go.mod
go mod tidy
echo "pinned to Kubernetes ${version} (staging modules ${staging})"
