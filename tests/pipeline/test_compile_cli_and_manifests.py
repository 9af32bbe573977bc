"""Compiling as KFP's own tools do: `kfp dsl compile` on the modules, and the Kubernetes-native manifests.

The manifests are checked the way the API server would see them: strict CRD schemas (unknown fields are errors),
`kubectl kustomize`, and kubernetes-validate.
"""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import pipeline
from components.constants import DEFAULT_IMAGE, KFP_NAMESPACE, MONITORING_PIPELINE_NAME
from components.pipeline_manifests import KUSTOMIZATION_FILENAME, VERSION_HASH_LENGTH
from tests.manifests import kube_schemas

REPO = Path(pipeline.__file__).resolve().parent
KFP_CLI = Path(sys.executable).with_name("kfp")
MONITORING_MODULE = REPO / "components" / "monitoring" / "pipeline_def.py"
CUSTOM_IMAGE = "registry.example/team/kfp-sklearn-kserve:1.2.3"
MANIFEST_FILES = {
    pipeline.PIPELINE_NAME: pipeline.PIPELINE_FILE,
    MONITORING_PIPELINE_NAME: pipeline.MONITORING_PIPELINE_FILE,
}


def kfp_compile(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(KFP_CLI), "dsl", "compile", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def committed_manifest(pipeline_name: str) -> list[dict]:
    return list(yaml.safe_load_all((pipeline.PIPELINE_MANIFESTS_DIR / f"{pipeline_name}.yaml").read_text()))


@pytest.mark.parametrize("module", [REPO / "pipeline.py", MONITORING_MODULE], ids=["training", "monitoring"])
def test_kfps_own_cli_finds_the_module_level_pipeline_and_writes_what_pipeline_py_compile_writes(tmp_path, module):
    proc = kfp_compile(tmp_path, "--py", str(module), "--output", "out.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pipeline.main(["compile", "--output", str(tmp_path / "ours" / "pipeline.yaml")]) == 0
    ours = "pipeline.yaml" if module.name == "pipeline.py" else pipeline.MONITORING_PIPELINE_FILE.name
    assert (tmp_path / "out.yaml").read_text() == (tmp_path / "ours" / ours).read_text()


def test_the_manifests_are_what_kfps_cli_writes_with_the_content_derived_version_name(tmp_path):
    (pipeline_obj, version) = committed_manifest(pipeline.PIPELINE_NAME)
    proc = kfp_compile(
        tmp_path,
        *("--py", str(REPO / "pipeline.py"), "--output", "k8s.yaml", "--kubernetes-manifest-format"),
        *("--include-pipeline-manifest", "--namespace", KFP_NAMESPACE),
        *("--pipeline-version-name", version["metadata"]["name"]),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(yaml.safe_load_all((tmp_path / "k8s.yaml").read_text())) == [pipeline_obj, version]


@pytest.mark.parametrize("pipeline_name", sorted(MANIFEST_FILES))
def test_a_pipeline_version_is_named_after_its_specs_hash_and_carries_that_spec(pipeline_name):
    pipeline_obj, version = committed_manifest(pipeline_name)
    compiled = MANIFEST_FILES[pipeline_name]
    digest = hashlib.sha256(compiled.read_bytes()).hexdigest()
    assert pipeline_obj["kind"] == "Pipeline" and pipeline_obj["metadata"]["name"] == pipeline_name
    assert version["kind"] == "PipelineVersion" and version["spec"]["pipelineName"] == pipeline_name
    assert version["metadata"]["name"] == f"{pipeline_name}-{digest[:VERSION_HASH_LENGTH]}"
    # The registered spec is the one `submit` uploads, platform spec (e.g. the monitoring Secret) included.
    documents = list(yaml.safe_load_all(compiled.read_text()))
    assert version["spec"]["pipelineSpec"] == documents[0]
    assert version["spec"].get("platformSpec") == (documents[1] if len(documents) > 1 else None)


def test_a_changed_pipeline_becomes_a_new_version_beside_the_same_pipeline(tmp_path):
    pipeline.compile_manifests(tmp_path, image=CUSTOM_IMAGE)
    for name in MANIFEST_FILES:
        old_pipeline, old_version = committed_manifest(name)
        new_pipeline, new_version = yaml.safe_load_all((tmp_path / f"{name}.yaml").read_text())
        assert new_pipeline == old_pipeline
        assert new_version["metadata"]["name"] != old_version["metadata"]["name"]
        assert new_version["metadata"]["name"].startswith(f"{name}-")


def test_the_committed_manifests_are_in_step_with_the_code(tmp_path):
    written = pipeline.compile_manifests(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in pipeline.PIPELINE_MANIFESTS_DIR.iterdir())
    for path in written:
        assert path.read_text() == (pipeline.PIPELINE_MANIFESTS_DIR / path.name).read_text(), (
            f"run `python pipeline.py compile` and commit manifests/pipelines/{path.name}"
        )


def test_every_manifest_validates_against_the_strict_kfp_crd_schemas(shared_schemas: Path):
    objects = [obj for name in MANIFEST_FILES for obj in committed_manifest(name)]
    assert [o["kind"] for o in objects] == ["Pipeline", "PipelineVersion"] * 2
    assert {o["metadata"]["namespace"] for o in objects} == {KFP_NAMESPACE}
    assert {f"{o['kind']}/{o['metadata']['name']}": kube_schemas.crd_errors(o, shared_schemas) for o in objects} == {
        f"{o['kind']}/{o['metadata']['name']}": [] for o in objects
    }
    # The same check refuses a misspelt field: strictness is in force.
    version = committed_manifest(pipeline.PIPELINE_NAME)[1]
    misspelt = {**version, "spec": {**version["spec"], "pipelinename": "x"}}
    assert any("pipelinename" in error for error in kube_schemas.crd_errors(misspelt, shared_schemas))


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not on PATH")
def test_kubectl_kustomize_renders_both_pipelines_and_kubernetes_validate_accepts_them(tmp_path):
    kustomization = yaml.safe_load((pipeline.PIPELINE_MANIFESTS_DIR / KUSTOMIZATION_FILENAME).read_text())
    assert kustomization["resources"] == sorted(f"{name}.yaml" for name in MANIFEST_FILES)
    out = subprocess.run(
        ["kubectl", "kustomize", str(pipeline.PIPELINE_MANIFESTS_DIR)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    objects = [doc for doc in yaml.safe_load_all(out) if doc]
    # Pipelines come first, so `kubectl apply -k` creates each before the version that names it.
    assert [o["kind"] for o in objects] == ["Pipeline", "Pipeline", "PipelineVersion", "PipelineVersion"]
    cli = Path(sys.executable).with_name("kubernetes-validate")
    if not cli.exists():
        pytest.skip("kubernetes-validate CLI not in the venv")
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(out)
    version = kube_schemas.kubernetes_version()
    result = subprocess.run(
        [str(cli), "--strict", "--quiet", "--no-warn", "-k", version, str(rendered)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compile_with_another_image_writes_build_and_leaves_the_committed_files_alone(tmp_path, monkeypatch, capsys):
    committed = [pipeline.PIPELINE_FILE, pipeline.MONITORING_PIPELINE_FILE, *pipeline.PIPELINE_MANIFESTS_DIR.iterdir()]
    before = {path: path.read_bytes() for path in committed}
    monkeypatch.setattr(pipeline, "BUILD_DIR", tmp_path / "build")
    assert pipeline.main(["compile", "--image", CUSTOM_IMAGE]) == 0
    assert {path: path.read_bytes() for path in committed} == before
    assert "the committed YAMLs are unchanged" in capsys.readouterr().out
    built, _platform = yaml.safe_load_all((tmp_path / "build" / "pipeline.yaml").read_text())
    assert {e["container"]["image"] for e in built["deploymentSpec"]["executors"].values()} == {CUSTOM_IMAGE}
    version = list(yaml.safe_load_all((tmp_path / "build/manifests/pipelines/sklearn-kserve-training.yaml").open()))
    images = {
        e["container"]["image"] for e in version[1]["spec"]["pipelineSpec"]["deploymentSpec"]["executors"].values()
    }
    assert images == {CUSTOM_IMAGE}
    assert DEFAULT_IMAGE in pipeline.PIPELINE_FILE.read_text()
