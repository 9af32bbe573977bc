#!/usr/bin/env bash
# minikube cluster -> cert-manager + KServe (Standard) + KFP -> project image loaded -> overlay applied.
# Needs: minikube, kubectl, helm. About 10 minutes; give it 4 CPUs and 8 GB.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
# shellcheck source=versions.env
source "${here}/versions.env"
profile="${MINIKUBE_PROFILE:-${CLUSTER_NAME}}"

if ! minikube status --profile "${profile}" >/dev/null 2>&1; then
  # calico so that NetworkPolicies (KFP's object store has one) behave as on a real cluster
  minikube start --profile "${profile}" --kubernetes-version="${KUBERNETES_VERSION}" \
    --cpus="${MINIKUBE_CPUS:-4}" --memory="${MINIKUBE_MEMORY:-8g}" --cni=calico
fi
kubectl config use-context "${profile}"

"${here}/install-platform.sh"

echo ">> building ${IMAGE} inside minikube"
minikube image build --profile "${profile}" -t "${IMAGE}" "${repo}"

"${here}/apply-project.sh" minikube
