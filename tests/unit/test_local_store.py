import json
import os
import stat

import pytest

from components.constants import MODEL_FILENAME
from components.local_store import (
    DEPLOYMENT_FILENAME,
    HISTORY_FILENAME,
    NothingDeployedError,
    current,
    publish,
)
from components.model_artifact import ModelIntegrityError, verify_model_dir


def test_publish_copies_a_read_only_version_and_points_at_it(model_dir, tmp_path):
    store = tmp_path / "store"
    deployment = publish(model_dir, store, model_name="iris", run_id="run-1", metrics={"accuracy": 0.97})
    version_dir = store / "iris" / deployment.version
    assert deployment.model_dir == str(version_dir.resolve())
    assert verify_model_dir(version_dir).model_sha256 == deployment.model_sha256
    assert not os.access(version_dir, os.W_OK) or os.geteuid() == 0  # root ignores mode bits
    assert stat.S_IMODE(version_dir.stat().st_mode) == 0o555
    assert stat.S_IMODE((version_dir / MODEL_FILENAME).stat().st_mode) == 0o444
    assert current(store, "iris") == deployment
    assert stat.S_IMODE((store / "iris" / DEPLOYMENT_FILENAME).stat().st_mode) == 0o644


def test_republishing_is_idempotent_and_history_keeps_every_deployment(model_dir, make_model_dir, tmp_path):
    store = tmp_path / "store"
    first = publish(model_dir, store, model_name="iris", run_id="run-1")
    again = publish(model_dir, store, model_name="iris", run_id="run-2")
    other_dir, _ = make_model_dir(family="random_forest", name="rf")
    second = publish(other_dir, store, model_name="iris", run_id="run-3")
    assert again.version == first.version != second.version
    assert current(store, "iris").run_id == "run-3"
    history = [json.loads(line) for line in (store / "iris" / HISTORY_FILENAME).read_text().splitlines()]
    assert [h["run_id"] for h in history] == ["run-1", "run-2", "run-3"]
    assert sorted(p.name for p in (store / "iris").iterdir() if p.is_dir()) == sorted({first.version, second.version})


def test_a_tampered_model_is_not_published(model_dir, tmp_path):
    (model_dir / MODEL_FILENAME).write_bytes(b"evil")
    with pytest.raises(ModelIntegrityError):
        publish(model_dir, tmp_path / "store", model_name="iris")
    assert not (tmp_path / "store" / "iris" / DEPLOYMENT_FILENAME).exists()


def test_nothing_deployed_says_how_to_deploy_and_lists_what_is_there(model_dir, tmp_path):
    store = tmp_path / "store"
    with pytest.raises(NothingDeployedError, match=r"run `python pipeline\.py run` first"):
        current(store, "iris")
    publish(model_dir, store, model_name="other")
    with pytest.raises(NothingDeployedError, match="Deployed models here: other"):
        current(store, "iris")


@pytest.mark.parametrize("name", ["Iris", "-x", "a_b", "a" * 64, "../etc"])
def test_model_names_must_be_dns_labels(model_dir, tmp_path, name):
    with pytest.raises(ValueError, match="DNS-1035"):
        publish(model_dir, tmp_path / "store", model_name=name)
