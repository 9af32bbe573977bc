import json
import os
import stat
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from components.constants import MODEL_CARD_FILENAME, MODEL_FILENAME, REFERENCE_PROFILE_FILENAME
from components.deploy.local_store import (
    DEPLOYMENT_FILENAME,
    HISTORY_FILENAME,
    STAGING_PREFIX,
    LocalStoreError,
    NothingDeployedError,
    current,
    latest,
    publish,
)
from components.model_artifact import (
    ModelIntegrityError,
    directory_digest,
    load_model_files,
    verify_model_dir,
    version_id,
)
from components.names import InvalidNameError

REPO = Path(__file__).resolve().parents[1]


def history(store: Path, name: str = "iris") -> list[dict]:
    return [json.loads(line) for line in (store / name / HISTORY_FILENAME).read_text().splitlines()]


def versions(store: Path, name: str = "iris") -> list[str]:
    return sorted(p.name for p in (store / name).iterdir() if p.is_dir())


def assert_live_version_is_complete(store: Path, name: str = "iris") -> None:
    live = current(store, name)
    files = load_model_files(Path(live.model_dir), expected_digest=live.digest)
    assert live.version == version_id(files.digest) == Path(live.model_dir).name


def test_publish_copies_a_read_only_version_and_points_at_it(model_dir, tmp_path):
    store = tmp_path / "store"
    deployment = publish(model_dir, store, model_name="iris", run_id="run-1", metrics={"accuracy": 0.97})
    version_dir = store / "iris" / deployment.version
    assert deployment.digest == directory_digest(model_dir) == directory_digest(version_dir)
    assert deployment.version == version_id(deployment.digest)
    assert deployment.model_dir == str(version_dir.resolve())
    assert verify_model_dir(version_dir, expected_digest=deployment.digest).model_sha256 == deployment.model_sha256
    assert not os.access(version_dir, os.W_OK) or os.geteuid() == 0  # root ignores mode bits
    assert stat.S_IMODE(version_dir.stat().st_mode) == 0o555
    assert stat.S_IMODE((version_dir / MODEL_FILENAME).stat().st_mode) == 0o444
    assert current(store, "iris") == deployment
    assert current(store, "iris").digest == deployment.digest
    assert stat.S_IMODE((store / "iris" / DEPLOYMENT_FILENAME).stat().st_mode) == 0o644


def test_republishing_is_idempotent_and_history_keeps_every_deployment(model_dir, make_model_dir, tmp_path):
    store = tmp_path / "store"
    first = publish(model_dir, store, model_name="iris", run_id="run-1")
    again = publish(model_dir, store, model_name="iris", run_id="run-2")
    other_dir, _ = make_model_dir(family="random_forest", name="rf")
    second = publish(other_dir, store, model_name="iris", run_id="run-3")
    assert again.version == first.version != second.version
    assert current(store, "iris").run_id == "run-3"
    assert [h["run_id"] for h in history(store)] == ["run-1", "run-2", "run-3"]
    assert versions(store) == sorted({first.version, second.version})


def test_renamed_columns_make_a_new_version_with_their_own_card_and_reference(tmp_path):
    from components.data import load_dataset, split_dataset
    from components.train import save_trained_model, train_model

    store = tmp_path / "store"
    deployed = []
    for name, rename in (("original", {}), ("renamed", {"sepal length (cm)": "sl", "petal width (cm)": "pw"})):
        frame = load_dataset("iris", label_column="target").rename(columns=rename)
        train, test = split_dataset(frame, label_column="target", test_fraction=0.2, seed=0)
        model = train_model(train, label_column="target", family="logistic_regression", seed=0)
        features = train.drop(columns=["target"])
        save_trained_model(
            model, tmp_path / name, family="logistic_regression", label_column="target",
            training_data_fingerprint=name, check_features=test.drop(columns=["target"]), reference_features=features,
        )  # fmt: skip
        deployed.append(publish(tmp_path / name, store, model_name="iris", run_id=name))
    original, renamed = deployed
    # Same data, same seed: the pickles are byte-identical, only the card and the reference profile differ.
    assert original.model_sha256 == renamed.model_sha256
    assert original.version != renamed.version and current(store, "iris").version == renamed.version
    served = Path(current(store, "iris").model_dir)
    assert json.loads((served / MODEL_CARD_FILENAME).read_text())["feature_names"][0] == "sl"
    assert "pw" in (served / REFERENCE_PROFILE_FILENAME).read_text()
    assert "petal width (cm)" not in (served / REFERENCE_PROFILE_FILENAME).read_text()


def test_a_tampered_model_is_not_published(model_dir, tmp_path):
    pin = directory_digest(model_dir)
    (model_dir / MODEL_FILENAME).write_bytes(b"evil")
    with pytest.raises(ModelIntegrityError):
        publish(model_dir, tmp_path / "store", model_name="iris")
    with pytest.raises(ModelIntegrityError, match="pinned digest"):
        publish(model_dir, tmp_path / "store", model_name="iris", expected_digest=pin)
    assert not (tmp_path / "store" / "iris" / DEPLOYMENT_FILENAME).exists()


def test_a_damaged_copy_of_the_same_version_is_refused_not_reused(model_dir, tmp_path):
    store = tmp_path / "store"
    deployed = publish(model_dir, store, model_name="iris")
    version_dir = Path(deployed.model_dir)
    os.chmod(version_dir, 0o755)
    (version_dir / "notes.txt").write_text("slipped in")
    with pytest.raises(ModelIntegrityError, match=f"already holds version {deployed.version} but it does not match"):
        publish(model_dir, store, model_name="iris")


def test_nothing_deployed_says_how_to_deploy_and_lists_what_is_there(model_dir, tmp_path):
    store = tmp_path / "store"
    with pytest.raises(NothingDeployedError, match=r"run `python pipeline\.py run` first"):
        current(store, "iris")
    publish(model_dir, store, model_name="other")
    with pytest.raises(NothingDeployedError, match="Deployed models here: other"):
        current(store, "iris")


def test_latest_is_the_model_deployed_last_even_within_one_second(model_dir, tmp_path):
    store = tmp_path / "store"
    with pytest.raises(NothingDeployedError, match=r"nothing has been deployed"):
        latest(store)
    for name in ("zebra", "alpha", "middle"):  # same second, and not in name order
        publish(model_dir, store, model_name=name)
    assert latest(store).model_name == "middle"
    publish(model_dir, store, model_name="zebra")
    assert latest(store).model_name == "zebra"


def test_an_old_or_broken_pointer_is_one_line(model_dir, tmp_path):
    store = tmp_path / "store"
    publish(model_dir, store, model_name="iris")
    pointer = store / "iris" / DEPLOYMENT_FILENAME
    old = json.loads(pointer.read_text())
    del old["digest"]
    pointer.write_text(json.dumps(old))
    with pytest.raises(LocalStoreError, match=r"has no digest .*publish the model again"):
        current(store, "iris")
    pointer.write_text("{")
    with pytest.raises(LocalStoreError, match="is not valid JSON"):
        current(store, "iris")


@pytest.mark.parametrize("name", ["Iris", "-x", "a_b", "a" * 47, "../etc", "iris\n"])
def test_model_names_use_the_cluster_rule(model_dir, tmp_path, name):
    with pytest.raises(InvalidNameError, match="model name"):
        publish(model_dir, tmp_path / "store", model_name=name)
    assert not (tmp_path / "store").exists()


def test_a_read_only_store_is_one_line(model_dir, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    os.chmod(store, 0o555)
    if os.access(store, os.W_OK):  # root ignores mode bits, but sysfs refuses new entries even to root
        store = Path("/sys/kfp-sklearn-kserve-store")
        try:
            store.mkdir()
        except PermissionError:
            pass
        else:
            store.rmdir()
            pytest.skip("running as root with a writable /sys: no read-only location to test with")
    with pytest.raises(LocalStoreError, match=r"cannot write the model store .*: .*; choose a writable --root"):
        publish(model_dir, store, model_name="iris")


# --- concurrency and crashes --------------------------------------------------------------------------------

_PUBLISH_MANY = """
import sys, threading
from pathlib import Path
from components.deploy.local_store import publish
model_dir, store, tag, n = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
go = threading.Barrier(n)
errors = []
def one(i):
    go.wait()
    try:
        publish(model_dir, store, model_name="iris", run_id=f"{tag}-{i}")
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
[t.start() for t in threads]
[t.join() for t in threads]
print("\\n".join(errors))
sys.exit(1 if errors else 0)
"""


def test_a_hundred_concurrent_publishes_of_one_version_all_succeed(model_dir, tmp_path):
    store, processes, threads_each = tmp_path / "store", 4, 15
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _PUBLISH_MANY, str(model_dir), str(store), f"p{p}", str(threads_each)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for p in range(processes)
    ]
    in_process = 100 - processes * threads_each
    go = threading.Barrier(in_process)

    def one(i: int) -> str:
        go.wait()
        return publish(model_dir, store, model_name="iris", run_id=f"t-{i}").version

    with ThreadPoolExecutor(in_process) as pool:
        mine = set(pool.map(one, range(in_process)))
    outputs = [child.communicate(timeout=120)[0] for child in children]
    assert [child.returncode for child in children] == [0] * processes, outputs
    assert mine == {version_id(directory_digest(model_dir))}
    assert versions(store) == sorted(mine)
    lines = history(store)
    assert len(lines) == 100 and len({h["run_id"] for h in lines}) == 100
    assert lines[-1] == json.loads((store / "iris" / DEPLOYMENT_FILENAME).read_text())
    assert not [p.name for p in (store / "iris").iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert_live_version_is_complete(store)


_KILLED_AT = """
import os, signal, sys
from pathlib import Path
from components.deploy.local_store import publish
model_dir, store, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
WRITES = {"os.mkdir", "tempfile.mkdtemp", "os.chmod", "os.rename", "os.truncate", "os.remove", "os.rmdir",
          "shutil.rmtree", "fcntl.flock"}
seen = 0
def hook(event, args):
    global seen
    writing = event == "open" and (args[1] not in (None, "r", "rb") or (args[2] or 0) & (os.O_WRONLY | os.O_RDWR))
    if event in WRITES or writing:
        if seen == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        seen += 1
sys.addaudithook(hook)
publish(model_dir, store, model_name="iris", run_id=f"killed-{kill_at}")
print("reported", flush=True)
"""


def test_kill_9_at_every_write_of_a_publish_loses_nothing_reported(model_dir, make_model_dir, tmp_path):
    """The child kills itself (SIGKILL) at its n-th filesystem write; n walks every write until one finishes."""
    new_dir, _ = make_model_dir(family="random_forest", name="rf")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = repaired = 0
    for kill_at in range(200):
        store = tmp_path / f"store-{kill_at}"
        publish(model_dir, store, model_name="iris", run_id="before")
        # Debris of an earlier killed publish, read-only as a real one is.
        leftover = store / "iris" / f"{STAGING_PREFIX}{'0' * 12}-old"
        leftover.mkdir()
        (leftover / MODEL_FILENAME).write_bytes(b"half")
        os.chmod(leftover, 0o555)
        child = subprocess.run(
            [sys.executable, "-c", _KILLED_AT, str(new_dir), str(store), str(kill_at)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        reported = "reported" in child.stdout
        assert reported == (child.returncode == 0), child.stderr[-2000:]
        assert_live_version_is_complete(store)  # the old version or the new one, always whole
        runs = [h["run_id"] for h in history(store)]
        assert runs[0] == "before"
        if reported:
            assert runs == ["before", f"killed-{kill_at}"]
            break
        assert child.returncode == -9
        killed += 1
        went_live = current(store, "iris").run_id == f"killed-{kill_at}"  # killed between pointer and history
        publish(new_dir, store, model_name="iris", run_id="next")
        assert_live_version_is_complete(store)
        runs = [h["run_id"] for h in history(store)]
        assert runs == ["before", f"killed-{kill_at}", "next"] if went_live else ["before", "next"]
        repaired += went_live
        assert not [p.name for p in (store / "iris").iterdir() if p.name.startswith(".") and p.name != ".lock"]
    print(f"kill -9 points tried: {killed}, history lines repaired: {repaired}")
    assert killed >= 10 and repaired >= 1  # the hook really interrupted the publish at many points
