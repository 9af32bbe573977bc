#!/usr/bin/env bash
# Apply this project's manifests (an overlay), copy KFP's object-store credentials into the models namespace,
# and check the deploy step's RBAC. Usage: apply-project.sh kind|minikube
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${here}/versions.env"
overlay="${1:?usage: apply-project.sh kind|minikube}"

kubectl apply -k "${here}/../overlays/${overlay}"

# No credentials in git: copy KFP's own (Secret kubeflow/mlpipeline-minio-artifact) into our annotated Secret.
access_key="$(kubectl -n kubeflow get secret mlpipeline-minio-artifact -o jsonpath='{.data.accesskey}')"
secret_key="$(kubectl -n kubeflow get secret mlpipeline-minio-artifact -o jsonpath='{.data.secretkey}')"
patch_file="$(umask 077 && mktemp)"   # keys go through a private file, not the process list
trap 'rm -f "${patch_file}"' EXIT
printf '{"data":{"AWS_ACCESS_KEY_ID":"%s","AWS_SECRET_ACCESS_KEY":"%s"}}' "${access_key}" "${secret_key}" >"${patch_file}"
kubectl -n "${MODELS_NAMESPACE}" patch secret kfp-object-store --type merge --patch-file "${patch_file}"

runner="system:serviceaccount:kubeflow:pipeline-runner"
# What the deploy step does: write InferenceServices, read the rollout it starts (Deployments, pods), and keep
# the version record (ConfigMap <model>-versions).
for check in "get inferenceservices.serving.kserve.io" "create inferenceservices.serving.kserve.io" \
  "patch inferenceservices.serving.kserve.io" "delete inferenceservices.serving.kserve.io" \
  "get deployments.apps" "list pods" "get configmaps" "create configmaps" "update configmaps"; do
  read -r verb resource <<<"${check}"
  kubectl auth can-i "${verb}" "${resource}" -n "${MODELS_NAMESPACE}" --as="${runner}" >/dev/null \
    || { echo "RBAC: ${runner} cannot ${verb} ${resource} in ${MODELS_NAMESPACE}" >&2; exit 1; }
done
if kubectl auth can-i get secrets -n "${MODELS_NAMESPACE}" --as="${runner}" >/dev/null 2>&1; then
  echo "note: ${runner} can read Secrets in ${MODELS_NAMESPACE}; the project's Role does not grant that" >&2
fi
echo ">> ${overlay} overlay applied; the pipeline can deploy to ${MODELS_NAMESPACE}"
