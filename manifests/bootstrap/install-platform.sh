#!/usr/bin/env bash
# Install cert-manager, KServe (Standard mode: no Knative, no Istio) and KFP standalone into the current
# kubectl context, at the versions in versions.env, and wait until each is ready. Needs kubectl and helm.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${here}/versions.env"

echo ">> cert-manager ${CERT_MANAGER_VERSION}"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
kubectl -n cert-manager wait --for=condition=Available deployment --all --timeout="${WAIT_TIMEOUT}"

echo ">> KServe ${KSERVE_VERSION} (Standard deployment mode, no ingress objects: use port-forward)"
helm upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd \
  --version "${KSERVE_VERSION}" --namespace kserve --create-namespace --wait
helm upgrade --install kserve oci://ghcr.io/kserve/charts/kserve-resources \
  --version "${KSERVE_VERSION}" --namespace kserve --wait \
  --set kserve.controller.deploymentMode=Standard \
  --set kserve.controller.gateway.disableIngressCreation=true
kubectl -n kserve wait --for=condition=Available deployment --all --timeout="${WAIT_TIMEOUT}"

echo ">> Kubeflow Pipelines ${KFP_VERSION} (standalone)"
kfp_src="github.com/kubeflow/pipelines/manifests/kustomize"
kubectl apply -k "${kfp_src}/cluster-scoped-resources?ref=${KFP_VERSION}"
kubectl wait --for=condition=established --timeout=60s crd/applications.app.k8s.io
kubectl apply -k "${kfp_src}/env/platform-agnostic?ref=${KFP_VERSION}"
kubectl -n kubeflow wait --for=condition=Available deployment --all --timeout="${WAIT_TIMEOUT}"
