"""Strict offline validation of rendered manifests: built-in kinds with kubernetes-validate, KServe kinds with the
CRD schemas in ../shared/schemas made strict (unknown fields are errors, as `kubectl apply --validate=strict` would
report them; by default the API server silently prunes them, which hides typos like `storageURI`).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
SHARED_SCHEMAS = REPO.parent / "shared" / "schemas"
"""KServe CRD schemas beside the repo (team machines and CI); tests that need them skip without."""
VERSIONS_ENV = MANIFESTS / "bootstrap" / "versions.env"
CRD_SCHEMA_FILES = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "kserve-inferenceservice-v1beta1.json",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "kserve-servingruntime-v1alpha1.json",
    ("pipelines.kubeflow.org/v2beta1", "Pipeline"): "kfp-pipeline-v2beta1.json",
    ("pipelines.kubeflow.org/v2beta1", "PipelineVersion"): "kfp-pipelineversion-v2beta1.json",
}


def pinned_versions() -> dict[str, str]:
    """The versions bootstrap installs (manifests/bootstrap/versions.env), so tests check against the same ones."""
    pins: dict[str, str] = {}
    for line in VERSIONS_ENV.read_text().splitlines():
        match = re.match(r"^\s*(?:export\s+)?([A-Z_]+)=\"?\$\{[A-Z_]+:-([^}]*)\}\"?", line) or re.match(
            r"^\s*(?:export\s+)?([A-Z_]+)=\"?([^\"#\s]*)", line
        )
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def kubernetes_version() -> str:
    """Kubernetes version of the kind/minikube clusters bootstrap creates, without the leading v."""
    return pinned_versions()["KUBERNETES_VERSION"].lstrip("v")


def kustomization_dirs() -> list[Path]:
    """Every directory under manifests/ that kustomize can build."""
    return sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize <dir>` (or standalone kustomize) parsed into objects."""
    kubectl = shutil.which("kubectl")
    command = (
        [kubectl, "kustomize", str(directory)]
        if kubectl
        else [shutil.which("kustomize") or "kustomize", "build", str(directory)]
    )
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def kustomize_available() -> bool:
    """Whether `kubectl` or `kustomize` is on PATH."""
    return bool(shutil.which("kubectl") or shutil.which("kustomize"))


def strictify(schema: Any) -> Any:
    """Copy of a CRD schema where every object with `properties` rejects unknown fields.

    CRD schemas leave `additionalProperties` out (the API server prunes instead); nodes marked
    `x-kubernetes-preserve-unknown-fields` keep unknown fields, exactly as the API server would.
    """
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@cache
def _crd_validator(schema_dir: Path, file_name: str) -> jsonschema.protocols.Validator:
    schema = strictify(json.loads((schema_dir / file_name).read_text()))
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return validator_cls(schema)


def crd_errors(obj: dict[str, Any], schema_dir: Path) -> list[str]:
    """Errors of a KServe object against its strict CRD schema, plus strict ObjectMeta for `metadata`."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    file_name = CRD_SCHEMA_FILES.get(key)  # type: ignore[arg-type]
    if file_name is None:
        return [f"no CRD schema for {key}"]
    errors = [
        f"{'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in _crd_validator(schema_dir, file_name).iter_errors(obj)
    ]
    return errors + metadata_errors(obj.get("metadata") or {})


_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def key_errors(kind: str, keys: Any) -> list[str]:
    """The API server's rules for label and annotation keys: optional DNS-subdomain prefix, '/', 63-char name."""
    errors = []
    for key in keys:
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
            errors.append(f"metadata/{kind}: key {key!r} has an invalid prefix")
        if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
            errors.append(f"metadata/{kind}: key {key!r} has an invalid name part")
    return errors


def metadata_errors(metadata: dict[str, Any]) -> list[str]:
    """Validate `metadata` as a strict ObjectMeta (the CRD schema only says `type: object`), plus the key and
    label-value formats the API server enforces beyond the OpenAPI schema."""
    import kubernetes_validate

    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}
    try:
        kubernetes_validate.validate(probe, kubernetes_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"metadata/{'/'.join(str(p) for p in list(exc.path)[1:])}: {exc.message}"]
    labels = metadata.get("labels") or {}
    errors = key_errors("labels", labels) + key_errors("annotations", metadata.get("annotations") or {})
    errors += [
        f"metadata/labels: value {v!r} of {k!r} is not a valid label value"
        for k, v in labels.items()
        if len(str(v)) > 63 or not _LABEL_VALUE.match(str(v))
    ]
    return errors


def builtin_errors(obj: dict[str, Any]) -> list[str]:
    """Errors of a built-in kind against the Kubernetes OpenAPI schema of the pinned version (strict)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, kubernetes_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(str(p) for p in exc.path)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [exc.message]
    return []


def object_errors(obj: dict[str, Any], schema_dir: Path) -> list[str]:
    """Dispatch: KServe and KFP kinds to the CRD schemas, everything else to kubernetes-validate."""
    if str(obj.get("apiVersion", "")).startswith(("serving.kserve.io/", "pipelines.kubeflow.org/")):
        return crd_errors(obj, schema_dir)
    return builtin_errors(obj)
