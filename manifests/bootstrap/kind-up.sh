#!/usr/bin/env bash
# kind cluster -> cert-manager + KServe (Standard) + KFP -> project image loaded -> overlay applied.
# Needs: kind, kubectl, helm, and docker or podman. About 10 minutes and 8 GB of RAM.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
# shellcheck source=versions.env
source "${here}/versions.env"
engine="${CONTAINER_ENGINE:-$(command -v docker >/dev/null 2>&1 && echo docker || echo podman)}"

if ! kind get clusters | grep -qx "${CLUSTER_NAME}"; then
  kind create cluster --name "${CLUSTER_NAME}" --image "${KIND_NODE_IMAGE}" --wait "${WAIT_TIMEOUT}"
fi
kubectl config use-context "kind-${CLUSTER_NAME}"

"${here}/install-platform.sh"

echo ">> building and loading ${IMAGE}"
"${engine}" build -t "${IMAGE}" "${repo}"
if [[ "${engine}" == podman ]]; then
  archive="$(mktemp --suffix=.tar)"
  trap 'rm -f "${archive}"' EXIT
  podman save -o "${archive}" "${IMAGE}"
  kind load image-archive "${archive}" --name "${CLUSTER_NAME}"
else
  kind load docker-image "${IMAGE}" --name "${CLUSTER_NAME}"
fi

"${here}/apply-project.sh" kind
