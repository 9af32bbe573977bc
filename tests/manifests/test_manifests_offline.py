"""Offline checks that stand in for a cluster: render, validate strictly, lint, scan."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components import constants
from components.deploy.inference_service import build_inference_service, resource_requirements
from tests.manifests.kube_schemas import (
    MANIFESTS,
    REPO,
    crd_errors,
    kubernetes_version,
    kustomization_dirs,
    kustomize_available,
    object_errors,
    pinned_versions,
    render,
    strictify,
)

needs_kustomize = pytest.mark.skipif(not kustomize_available(), reason="kubectl/kustomize not on PATH")
OVERLAYS = ["overlays/kind", "overlays/minikube"]
BOOTSTRAP = MANIFESTS / "bootstrap"
CHECKOV = REPO / ".tools" / "checkov" / "bin" / "checkov"
# Names the manifests use and no code reads: facts of manifests/ (and KServe) checked here.
LOGGER_AGENT_PORT = 9081
"""With `predictor.logger`, KServe's Service targets the injected agent on this port (service_reconciler.go)."""
MODEL_CLIENTS_NAMESPACE_LABEL = "kfp-sklearn-kserve/model-clients"
"""Namespaces labelled with this (value "true") may call the predictors (base/networkpolicy-predictors.yaml)."""
KFP_OBJECT_STORE_ENDPOINT = "seaweedfs.kubeflow:9000"
"""KFP >= 2.15 standalone (SeaweedFS, S3-compatible port); older releases: minio-service.kubeflow:9000."""
MODEL_STORE_SECRET_NAME = "kfp-object-store"  # the Secret's name, not a credential


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    if not kustomize_available():
        pytest.skip("kubectl/kustomize not on PATH")
    return {str(d.relative_to(MANIFESTS)): render(d) for d in kustomization_dirs()}


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def test_every_overlay_and_the_base_are_kustomizations():
    assert {str(d.relative_to(MANIFESTS)) for d in kustomization_dirs()} >= {"base", *OVERLAYS}


@needs_kustomize
def test_every_rendered_object_validates_strictly(rendered, shared_schemas: Path):
    problems = {
        f"{name}: {obj['kind']}/{obj['metadata']['name']}": errors
        for name, objects in rendered.items()
        for obj in objects
        if (errors := object_errors(obj, shared_schemas))
    }
    assert problems == {}


@needs_kustomize
def test_kubernetes_validate_cli_accepts_every_rendering_and_rejects_unknown_fields(tmp_path: Path, rendered):
    cli = REPO / ".venv" / "bin" / "kubernetes-validate"
    if not cli.exists():
        pytest.skip("kubernetes-validate CLI not in .venv")
    for name, objects in rendered.items():
        path = tmp_path / f"{name.replace('/', '-')}.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        result = subprocess.run(
            [str(cli), "--strict", "--quiet", "--no-warn", "-k", kubernetes_version(), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
    # The same CLI, same flags, on a misspelt field: proves --strict is in force.
    broken = next(o for o in rendered["base"] if o["kind"] == "Role")
    broken = {**broken, "rules": [{**broken["rules"][0], "verb": ["get"]}]}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [str(cli), "--strict", "--quiet", "--no-warn", "-k", kubernetes_version(), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "verb" in result.stdout


def test_the_reference_inference_service_validates_and_equals_the_builder_output(shared_schemas: Path):
    reference = yaml.safe_load((MANIFESTS / "base" / "inferenceservice.yaml").read_text())
    model = reference["spec"]["predictor"]["model"]
    built = build_inference_service(
        name=constants.DEFAULT_MODEL_NAME,
        namespace=constants.DEFAULT_NAMESPACE,
        storage_uri=model["storageUri"],
        service_account=constants.MODEL_READER_SERVICE_ACCOUNT,
    )
    assert crd_errors(reference, shared_schemas) == []
    assert built == reference


def test_strict_validation_catches_a_misspelt_field(shared_schemas: Path):
    reference = yaml.safe_load((MANIFESTS / "base" / "inferenceservice.yaml").read_text())
    reference["spec"]["predictor"]["model"]["storageURI"] = reference["spec"]["predictor"]["model"]["storageUri"]
    reference["metadata"]["annotation"] = {}
    errors = crd_errors(reference, shared_schemas)
    assert any("storageURI" in e for e in errors)
    assert any("annotation" in e for e in errors)


def test_metadata_keys_are_checked_like_the_api_server_does(shared_schemas: Path):
    reference = yaml.safe_load((MANIFESTS / "base" / "inferenceservice.yaml").read_text())
    reference["metadata"]["annotations"]["Bad_Prefix/x"] = "1"
    reference["metadata"]["annotations"]["ok.example/" + "n" * 64] = "1"
    reference["metadata"]["labels"]["team"] = "not a label value"
    errors = crd_errors(reference, shared_schemas)
    assert len(errors) == 3, errors


def test_strictify_honours_preserve_unknown_fields():
    schema = {
        "type": "object",
        "properties": {
            "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {}}},
            "closed": {"type": "object", "properties": {"a": {}}},
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    strict = strictify(schema)
    assert "additionalProperties" not in strict["properties"]["open"]
    assert strict["properties"]["closed"]["additionalProperties"] is False
    assert strict["properties"]["map"]["additionalProperties"] == {"type": "string"}
    assert strict["additionalProperties"] is False


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_runtime_runs_the_project_image_hardened(rendered, overlay):
    (runtime,) = by_kind(rendered[overlay], "ServingRuntime")
    assert runtime["metadata"]["name"] == constants.SERVING_RUNTIME_NAME
    assert runtime["metadata"]["namespace"] == constants.DEFAULT_NAMESPACE
    formats = runtime["spec"]["supportedModelFormats"]
    assert [f["name"] for f in formats] == [constants.SKLEARN_MODEL_FORMAT]
    assert set(runtime["spec"]["protocolVersions"]) == set(constants.PROTOCOL_VERSIONS)
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == constants.PREDICTOR_CONTAINER_NAME
    assert container["image"] == constants.DEFAULT_IMAGE
    assert container["command"] == [constants.PREDICTOR_COMMAND]
    assert container["args"] == [
        "--model_name={{.Name}}",
        f"--model_dir={constants.MODEL_MOUNT_PATH}",
        f"--http_port={constants.DEFAULT_HTTP_PORT}",
        "--grpc_port=8081",
    ]
    assert container["imagePullPolicy"] == "IfNotPresent"  # side-loaded, never pulled
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == constants.PREDICTOR_UID
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # A read-only root needs a writable /tmp.
    tmp_mounts = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp_mounts and any(
        v["name"] == tmp_mounts[0]["name"] and "emptyDir" in v for v in runtime["spec"]["volumes"]
    )
    assert container["resources"]["limits"] and container["resources"]["requests"]


@needs_kustomize
def test_deployer_role_grants_exactly_the_verbs_the_deploy_step_uses(rendered):
    objects = rendered["base"]
    (role,) = by_kind(objects, "Role")
    assert role["metadata"]["name"] == constants.DEPLOYER_ROLE_NAME
    # InferenceServices to write them; Deployments and pods read-only, to follow the rollout (deploy/cluster.py);
    # the version record's ConfigMap read-modify-written (deploy/cluster_versions.py): no list, patch or delete.
    assert role["rules"] == [
        {
            "apiGroups": [constants.KSERVE_GROUP],
            "resources": [constants.INFERENCE_SERVICE_PLURAL],
            "verbs": ["get", "create", "patch", "delete"],
        },
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]},
    ]
    (binding,) = by_kind(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == constants.DEPLOYER_ROLE_NAME
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": constants.KFP_RUN_SERVICE_ACCOUNT, "namespace": constants.KFP_NAMESPACE}
    ]


def admits(policy: dict, namespace: str, labels: dict[str, str], port: int) -> bool:
    """NetworkPolicy ingress semantics for a peer pod in `namespace` (with namespace `labels`) calling `port`."""
    namespace_labels = {"kubernetes.io/metadata.name": namespace, **labels}
    for rule in policy["spec"].get("ingress") or []:
        peers = rule.get("from")
        peer_ok = not peers or any(
            "namespaceSelector" in peer
            and "podSelector" not in peer
            and all(
                namespace_labels.get(k) == v for k, v in (peer["namespaceSelector"].get("matchLabels") or {}).items()
            )
            for peer in peers
        )
        ports = rule.get("ports")
        port_ok = not ports or any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports)
        if peer_ok and port_ok:
            return True
    return False


def predictor_policy(objects: list[dict]) -> dict:
    (policy,) = [
        p for p in by_kind(objects, "NetworkPolicy") if p["metadata"]["namespace"] == constants.DEFAULT_NAMESPACE
    ]
    return policy


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("logger", [False, True])
def test_the_predictor_policy_admits_every_port_the_service_targets_with_and_without_the_logger(
    rendered, overlay, logger
):
    from components.payload_log import logger_spec
    from tests.fakes.predictor_preview import service_ports

    (runtime,) = by_kind(rendered[overlay], "ServingRuntime")
    isvc = build_inference_service(
        name=constants.DEFAULT_MODEL_NAME,
        namespace=constants.DEFAULT_NAMESPACE,
        storage_uri="s3://mlpipeline/v2/artifacts/p/r/train/u/model",
        logger=logger_spec("http://payload-logger.kserve-models.svc.cluster.local") if logger else None,
    )
    ports = service_ports(isvc, runtime)
    http = LOGGER_AGENT_PORT if logger else constants.DEFAULT_HTTP_PORT
    assert [(p["port"], p["targetPort"]) for p in ports] == [(80, http), (8081, 8081)]
    assert ports[1]["appProtocol"] == "kubernetes.io/h2c"  # gRPC next to HTTP, Standard mode only
    # The deploy step's smoke predict runs in the KFP namespace.
    for port in ports:
        assert admits(predictor_policy(rendered[overlay]), constants.KFP_NAMESPACE, {}, port["targetPort"]), port


@needs_kustomize
def test_the_predictor_policy_admits_only_the_named_namespaces(rendered):
    policy = predictor_policy(rendered["base"])
    opted_in = {MODEL_CLIENTS_NAMESPACE_LABEL: "true"}
    for namespace, labels in [(constants.KFP_NAMESPACE, {}), ("istio-system", {}), ("my-app", opted_in)]:
        assert admits(policy, namespace, labels, constants.DEFAULT_HTTP_PORT), namespace
    for namespace in ["default", "kube-system", "my-app", constants.DEFAULT_NAMESPACE]:
        assert not admits(policy, namespace, {}, constants.DEFAULT_HTTP_PORT), namespace
    assert not admits(policy, constants.KFP_NAMESPACE, {}, 8082)  # no other port


@needs_kustomize
def test_the_builders_defaults_keep_the_overlays_resources(rendered):
    """The InferenceService's container wins over the runtime's key by key: leave what the overlay sizes alone."""
    from tests.fakes.predictor_preview import predictor_deployments

    (runtime,) = by_kind(rendered["overlays/kind"], "ServingRuntime")
    default = build_inference_service(
        name=constants.DEFAULT_MODEL_NAME, namespace=constants.DEFAULT_NAMESPACE, storage_uri="s3://b/k"
    )
    (deployment,) = predictor_deployments(default, runtime)
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert resources["limits"] == runtime["spec"]["containers"][0]["resources"]["limits"]

    sized = build_inference_service(
        name=constants.DEFAULT_MODEL_NAME,
        namespace=constants.DEFAULT_NAMESPACE,
        storage_uri="s3://b/k",
        resources=resource_requirements(cpu_request="250m"),
    )
    (deployment,) = predictor_deployments(sized, runtime)
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "250m", "memory": "128Mi"}


def test_the_reference_storage_uri_follows_kfps_artifact_layout():
    """<pipeline root>/<pipeline name>/<run id>/<task>/<uuid>/<output> (kubeflow/pipelines backend/src/v2/driver/
    driver.go provisionOutputs, metadata/client.go GetPipeline), with minio:// rewritten to s3://."""
    from pipeline import PIPELINE_NAME

    reference = yaml.safe_load((MANIFESTS / "base" / "inferenceservice.yaml").read_text())
    uri = reference["spec"]["predictor"]["model"]["storageUri"]
    root = constants.KFP_PIPELINE_ROOT.replace("minio://", "s3://")
    assert re.fullmatch(rf"{re.escape(root)}/{PIPELINE_NAME}/[A-Z_]+/train/[A-Z_]+/model", uri), uri


def test_manifests_name_only_files_that_exist():
    """Comments that point at a script or file must point at one that exists."""
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        for name in re.findall(r"(?:bootstrap|base|overlays|monitoring)/[\w./-]+\.(?:sh|yaml|env)", path.read_text()):
            assert (MANIFESTS / name).exists(), f"{path.relative_to(REPO)} names {name}, which does not exist"


@needs_kustomize
def test_storage_secret_points_at_kfps_object_store_and_holds_no_credentials(rendered):
    objects = rendered["base"]
    (secret,) = by_kind(objects, "Secret")
    assert secret["metadata"]["name"] == MODEL_STORE_SECRET_NAME
    annotations = secret["metadata"]["annotations"]
    assert annotations["serving.kserve.io/s3-endpoint"] == KFP_OBJECT_STORE_ENDPOINT
    assert annotations["serving.kserve.io/s3-usehttps"] == "0"
    assert "data" not in secret and "stringData" not in secret
    (account,) = by_kind(objects, "ServiceAccount")
    assert account["metadata"]["name"] == constants.MODEL_READER_SERVICE_ACCOUNT
    assert account["secrets"] == [{"name": MODEL_STORE_SECRET_NAME}]
    assert account["automountServiceAccountToken"] is False


@needs_kustomize
def test_network_policy_admits_the_models_namespace_to_the_object_store(rendered):
    (policy,) = [
        p for p in by_kind(rendered["base"], "NetworkPolicy") if p["metadata"]["namespace"] == constants.KFP_NAMESPACE
    ]
    assert policy["metadata"]["namespace"] == constants.KFP_NAMESPACE
    (rule,) = policy["spec"]["ingress"]
    namespaces = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in rule["from"]]
    assert namespaces == [constants.DEFAULT_NAMESPACE]


def test_pinned_versions_match_the_project():
    pins = pinned_versions()
    assert pins["IMAGE"] == constants.DEFAULT_IMAGE
    assert pins["MODELS_NAMESPACE"] == constants.DEFAULT_NAMESPACE
    assert pins["KSERVE_VERSION"].lstrip("v") == __import__("importlib.metadata").metadata.version("kserve")
    assert tuple(int(p) for p in kubernetes_version().split(".")[:2]) >= (1, 32)  # KServe Standard mode minimum
    assert pins["KIND_NODE_IMAGE"].endswith(pins["KUBERNETES_VERSION"])


def test_bootstrap_scripts_are_strict_bash():
    scripts = sorted(BOOTSTRAP.glob("*.sh"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script.name
        assert "set -euo pipefail" in text, script.name


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_bootstrap_scripts_pass_shellcheck():
    files = [str(p) for p in sorted(BOOTSTRAP.glob("*.sh"))] + [str(BOOTSTRAP / "versions.env")]
    result = subprocess.run(
        ["shellcheck", "--external-sources", "--source-path=SCRIPTDIR", "--shell=bash", *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov not installed in .tools/checkov (run: make checkov-install)")
@needs_kustomize
def test_checkov_finds_no_unexplained_failure(tmp_path: Path, rendered):
    from tests.fakes.predictor_preview import predictor_deployments

    for name, objects in rendered.items():
        path = tmp_path / f"{name.replace('/', '-')}.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        # KServe builds the predictor Deployment from the runtime + InferenceService; checkov only scans built-in
        # kinds, so scan the pod KServe will run as well.
        runtimes = by_kind(objects, "ServingRuntime")
        if runtimes:
            preview = tmp_path / f"{name.replace('/', '-')}-predictor.yaml"
            reference = yaml.safe_load((MANIFESTS / "base" / "inferenceservice.yaml").read_text())
            preview.write_text(yaml.safe_dump_all(predictor_deployments(reference, runtimes[0])))
    result = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--config-file",
            str(MANIFESTS / ".checkov.yaml"),
            "--skip-download",
            "--output",
            "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}" for r in reports for c in r["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(failed)
    assert result.returncode == 0, result.stderr[-2000:]
