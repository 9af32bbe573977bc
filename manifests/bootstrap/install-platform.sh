#!/usr/bin/env bash
# Install cert-manager, KServe (Standard mode: no Knative, no Istio) and KFP standalone into the current
# kubectl context, at the versions in versions.env, and wait until each is ready. Needs kubectl and helm.
# KFP_API_MODE=k8s-native installs KFP with its Kubernetes-native pipeline store (see versions.env).
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
  --set kserve.controller.gateway.disableIngressCreation=true \
  --set kserve.controller.gateway.disableIstioVirtualHost=true
# disableIstioVirtualHost: there is no Istio here; without it KServe tries to build an Istio VirtualService and
# warns on every reconcile (configmap inferenceservice-config, ingress.disableIstioVirtualHost).
kubectl -n kserve wait --for=condition=Available deployment --all --timeout="${WAIT_TIMEOUT}"

echo ">> Kubeflow Pipelines ${KFP_VERSION} (standalone, pipeline store: ${KFP_API_MODE})"
kfp_src="github.com/kubeflow/pipelines/manifests/kustomize"
case "${KFP_API_MODE}" in
  database) kfp_env="env/platform-agnostic" ;;
  # Pipeline/PipelineVersion CRDs + validating webhook; its certificate comes from cert-manager (installed above).
  k8s-native) kfp_env="env/cert-manager/platform-agnostic-k8s-native" ;;
  *) echo "KFP_API_MODE must be database or k8s-native, not ${KFP_API_MODE}" >&2; exit 2 ;;
esac
kubectl apply -k "${kfp_src}/cluster-scoped-resources?ref=${KFP_VERSION}"
kubectl wait --for=condition=established --timeout=60s crd/applications.app.k8s.io
kubectl apply -k "${kfp_src}/${kfp_env}?ref=${KFP_VERSION}"
kubectl -n kubeflow wait --for=condition=Available deployment --all --timeout="${WAIT_TIMEOUT}"
if [[ "${KFP_API_MODE}" == k8s-native ]]; then
  kubectl wait --for=condition=established --timeout=60s crd/pipelines.pipelines.kubeflow.org \
    crd/pipelineversions.pipelines.kubeflow.org
  echo ">> register the pipelines with: kubectl apply -k manifests/pipelines"
fi
