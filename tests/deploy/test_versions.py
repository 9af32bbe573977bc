"""Versions on the local target: the store's history, promote and rollback flipping the live pointer, and the
`models` command over it; plus the state rules both targets share (components/deploy/versions.py)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.constants import (
    ACTION_DEPLOY,
    ACTION_FAILED,
    ACTION_PROMOTE,
    ACTION_ROLLBACK,
    DEFAULT_LABEL_COLUMN,
    LOCAL_STORE_DIRNAME,
    MODEL_FILENAME,
    VERSION_STATE_LIVE,
    VERSION_STATE_PREVIOUS,
    VERSION_STATE_ROLLED_BACK,
)
from components.deploy import local_store
from components.deploy.local_store import DEPLOYMENT_FILENAME, HISTORY_FILENAME, current, publish
from components.deploy.versions import (
    NothingToRollBackError,
    UnknownVersionError,
    resolve_version,
    rollback_target,
    summarize,
)
from components.model_artifact import ModelIntegrityError, load_model_files, save_model
from components.versions_cli import main as models_main

NAME = "iris"


@dataclass(frozen=True)
class Event:
    version: str
    action: str = ACTION_DEPLOY


def states(events: list[Event], live: str | None) -> dict[str, str]:
    return {s.version: s.state for s in summarize(events, live)}


def test_states_follow_the_history_and_rollbacks_walk_back_instead_of_bouncing():
    events = [Event("aaa"), Event("bbb"), Event("ccc")]
    assert states(events, "ccc") == {"ccc": "live", "bbb": "previous", "aaa": "previous"}
    assert [s.version for s in summarize(events, "ccc")] == ["ccc", "bbb", "aaa"]  # newest first
    assert rollback_target(events, "ccc", model_name=NAME) == "bbb"

    events.append(Event("bbb", ACTION_ROLLBACK))
    assert states(events, "bbb") == {"bbb": "live", "ccc": "rolled-back", "aaa": "previous"}
    assert rollback_target(events, "bbb", model_name=NAME) == "aaa"  # not back to ccc, which was rolled back

    events.append(Event("aaa", ACTION_ROLLBACK))
    assert states(events, "aaa") == {"aaa": "live", "bbb": "rolled-back", "ccc": "rolled-back"}
    with pytest.raises(NothingToRollBackError, match=r"nothing to roll back to: iris .*rolled back already: bbb, ccc"):
        rollback_target(events, "aaa", model_name=NAME)

    events.append(Event("ccc", ACTION_PROMOTE))  # promoting a rolled-back version makes it live again
    assert states(events, "ccc") == {"ccc": "live", "aaa": "previous", "bbb": "rolled-back"}
    assert rollback_target(events, "ccc", model_name=NAME) == "aaa"


def test_a_failed_deploy_is_listed_but_never_live_and_never_a_rollback_target():
    events = [Event("aaa"), Event("bbb", ACTION_FAILED)]
    assert states(events, "aaa") == {"bbb": "failed", "aaa": "live"}
    with pytest.raises(NothingToRollBackError):
        rollback_target(events, "aaa", model_name=NAME)
    events += [Event("ccc"), Event("bbb")]  # a later deploy of it worked
    assert states(events, "bbb") == {"bbb": "live", "ccc": "previous", "aaa": "previous"}
    assert [s.events for s in summarize(events, "bbb")] == [1, 1, 1]


def test_the_target_wins_over_the_last_record_and_a_single_version_has_nothing_to_roll_back_to():
    events = [Event("aaa"), Event("bbb")]
    # Someone changed the target by hand (the pointer or the InferenceService): it, not the history, is live.
    assert states(events, "aaa") == {"aaa": "live", "bbb": "previous"}
    with pytest.raises(NothingToRollBackError, match=r"^nothing to roll back to: iris has no earlier version"):
        rollback_target([Event("aaa")], "aaa", model_name=NAME)


def test_a_version_is_named_by_its_id_or_an_unambiguous_prefix():
    events = [Event("ab12cd34ef56"), Event("ab99cd34ef56"), Event("0f0f0f0f0f0f")]
    assert resolve_version(events, "0f0f0f0f0f0f", model_name=NAME) == "0f0f0f0f0f0f"
    assert resolve_version(events, "AB12", model_name=NAME) == "ab12cd34ef56"
    with pytest.raises(UnknownVersionError, match="'ab' of iris; recorded versions: 0f0f0f0f0f0f, ab99cd34ef56"):
        resolve_version(events, "ab", model_name=NAME)  # too short to be a prefix
    with pytest.raises(UnknownVersionError, match="'ab9' of iris"):
        resolve_version(events, "ab9", model_name=NAME)
    with pytest.raises(UnknownVersionError, match=r"'ab99' of iris is ambiguous: ab99ffffffff, ab99cd34ef56$"):
        resolve_version([*events, Event("ab99ffffffff")], "ab99", model_name=NAME)


# --- the local store ---------------------------------------------------------------------------------------


@pytest.fixture
def three_models(tmp_path: Path, iris_xy) -> list[Path]:
    """Three model directories of one Iris model trained on 'different data' (fingerprints a, b, c): three versions."""
    from sklearn.linear_model import LogisticRegression

    x, y, features, _ = iris_xy
    estimator = LogisticRegression(max_iter=500).fit(x, y)
    directories = []
    for tag in "abc":
        directory = tmp_path / f"model-{tag}"
        save_model(
            directory,
            estimator,
            feature_names=features,
            class_names=[str(c) for c in estimator.classes_],
            model_family="logistic_regression",
            hyperparameters={},
            training_data_fingerprint=f"data-{tag}",
            label_column=DEFAULT_LABEL_COLUMN,
        )
        directories.append(directory)
    return directories


@pytest.fixture
def store(tmp_path: Path, three_models: list[Path]) -> Path:
    """A store where runs a, b, c deployed one version each, in that order."""
    root = tmp_path / "outputs" / LOCAL_STORE_DIRNAME
    for tag, directory in zip("abc", three_models, strict=True):
        publish(
            directory, root, model_name=NAME, run_id=f"run-{tag}", run_name=f"train {tag}", metrics={"accuracy": 0.9}
        )
    return root


def history_lines(store: Path) -> list[dict]:
    return [json.loads(line) for line in (store / NAME / HISTORY_FILENAME).read_text().splitlines()]


def test_every_deployed_version_is_recorded_with_its_lineage(store: Path):
    summaries = local_store.versions(store, NAME)
    assert [(s.record.run_id, s.state) for s in summaries] == [
        ("run-c", VERSION_STATE_LIVE),
        ("run-b", VERSION_STATE_PREVIOUS),
        ("run-a", VERSION_STATE_PREVIOUS),
    ]
    record = summaries[0].record
    assert record.digest.startswith("sha256:") and record.version == record.digest[7:19]
    assert record.training_data_fingerprint == "data-c"
    assert (record.metrics, record.run_name, record.action) == ({"accuracy": 0.9}, "train c", ACTION_DEPLOY)
    assert record.deployed_at.endswith("+00:00")


def test_rollback_flips_the_pointer_to_the_previous_version_and_records_it(store: Path):
    before = {s.record.run_id: s.version for s in local_store.versions(store, NAME)}

    live, changed = local_store.rollback(store, NAME)

    assert changed and live.version == before["run-b"] and live.action == ACTION_ROLLBACK
    pointer = current(store, NAME)
    assert pointer == live
    # What `serve` will load: the version's own read-only directory, verified against the digest pinned in the pointer.
    files = load_model_files(Path(pointer.model_dir), expected_digest=pointer.digest)
    assert files.card.training_data_fingerprint == "data-b" == pointer.training_data_fingerprint
    assert (pointer.run_id, pointer.run_name) == ("run-b", "train b")  # the lineage of the run that trained it
    assert history_lines(store)[-1] == json.loads((store / NAME / DEPLOYMENT_FILENAME).read_text())
    assert [(h["run_id"], h["action"]) for h in history_lines(store)][-2:] == [
        ("run-c", ACTION_DEPLOY),
        ("run-b", ACTION_ROLLBACK),
    ]

    live, _ = local_store.rollback(store, NAME)
    assert live.version == before["run-a"]
    with pytest.raises(NothingToRollBackError, match="rolled back already"):
        local_store.rollback(store, NAME)
    assert current(store, NAME).version == before["run-a"] and len(history_lines(store)) == 5

    live, changed = local_store.promote(store, NAME, before["run-c"][:6])
    assert changed and live.version == before["run-c"] and live.action == ACTION_PROMOTE
    states_now = {s.version: s.state for s in local_store.versions(store, NAME)}
    assert states_now == {
        before["run-c"]: VERSION_STATE_LIVE,
        before["run-a"]: VERSION_STATE_PREVIOUS,
        before["run-b"]: VERSION_STATE_ROLLED_BACK,
    }
    _, changed = local_store.promote(store, NAME, before["run-c"])
    assert not changed and len(history_lines(store)) == 6  # already live: nothing written


def test_promote_refuses_an_unknown_version_and_a_damaged_copy_and_leaves_the_pointer(store: Path):
    pointer_before = (store / NAME / DEPLOYMENT_FILENAME).read_text()
    with pytest.raises(UnknownVersionError, match=r"unknown version 'feedfacecafe' of iris; recorded versions: "):
        local_store.promote(store, NAME, "feedfacecafe")
    oldest = local_store.versions(store, NAME)[-1].record
    version_dir = Path(oldest.model_dir)
    os.chmod(version_dir, 0o755)
    os.chmod(version_dir / MODEL_FILENAME, 0o644)
    (version_dir / MODEL_FILENAME).write_bytes(b"not the model that was published")
    with pytest.raises(ModelIntegrityError):
        local_store.promote(store, NAME, oldest.version)
    assert (store / NAME / DEPLOYMENT_FILENAME).read_text() == pointer_before
    assert len(history_lines(store)) == 3


def test_records_written_before_versions_existed_still_load(store: Path):
    """Pointers and history lines of the previous release lack the fingerprint and the action: defaults apply."""
    pointer = store / NAME / DEPLOYMENT_FILENAME
    old = json.loads(pointer.read_text())
    for key in ("training_data_fingerprint", "action"):
        del old[key]
    pointer.write_text(json.dumps(old) + "\n")
    lines = [
        {k: v for k, v in h.items() if k not in ("training_data_fingerprint", "action")} for h in history_lines(store)
    ]
    (store / NAME / HISTORY_FILENAME).write_text("".join(json.dumps(h) + "\n" for h in lines))
    assert current(store, NAME).action == ACTION_DEPLOY
    assert local_store.rollback(store, NAME)[0].run_id == "run-b"


# --- `pipeline.py models` on the local target ---------------------------------------------------------------


def models(capsys, *argv: str) -> tuple[int, str, str]:
    status = models_main(["models", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_models_list_marks_the_live_version_and_rollback_promote_switch_it(store: Path, capsys):
    root = str(store.parent)
    status, out, _ = models(capsys, "list", "--root", root)
    assert status == 0
    live_line = next(line for line in out.splitlines() if line.startswith("*"))
    assert " live " in live_line and "train c (run-c)" in live_line and "accuracy=0.9" in live_line
    assert "data-c" in live_line and live_line.split()[1] == current(store, NAME).digest[7:19]
    assert sum(line.startswith("*") for line in out.splitlines()) == 1

    status, out, _ = models(capsys, "rollback", "--root", root, "--model-name", NAME)
    run_b = current(store, NAME)
    assert status == 0 and run_b.run_id == "run-b"
    assert (
        out.strip()
        == f"{NAME}: rolled back to version {run_b.version} ({run_b.model_dir}; restart `pipeline.py serve`)"
    )

    status, out, _ = models(capsys, "list", "--root", root, "--json")
    records = json.loads(out)
    assert [(r["run_id"], r["state"]) for r in records] == [
        ("run-b", "live"),
        ("run-c", "rolled-back"),
        ("run-a", "previous"),
    ]
    assert all(r["digest"].startswith("sha256:") and r["training_data_fingerprint"] for r in records)

    run_c = next(r for r in records if r["run_id"] == "run-c")
    status, out, _ = models(capsys, "promote", run_c["version"], "--root", root)
    assert status == 0 and out.startswith(f"{NAME}: promoted version {run_c['version']} (")
    assert current(store, NAME).run_id == "run-c"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["promote", "feedfacecafe"], "pipeline.py models promote: unknown version 'feedfacecafe' of iris; recorded"),
        (["list", "--model-name", "nope"], "pipeline.py models list: no model named 'nope' has been deployed"),
        (["rollback", "--model-name", "Bad_Name"], "pipeline.py models rollback: "),
    ],
)
def test_models_refusals_are_one_line_and_exit_1(store: Path, capsys, argv, message):
    status, out, err = models(capsys, *argv, "--root", str(store.parent))
    assert status == 1 and out == ""
    assert err.startswith(message) and err.count("\n") == 1, err


def test_nothing_to_roll_back_to_is_one_line(tmp_path: Path, three_models: list[Path], capsys):
    root = tmp_path / "single"
    publish(three_models[0], root / LOCAL_STORE_DIRNAME, model_name=NAME, run_id="only")
    status, _, err = models(capsys, "rollback", "--root", str(root))
    assert status == 1
    assert (
        err
        == "pipeline.py models rollback: nothing to roll back to: iris has no earlier version that is not rolled back\n"
    )
    status, _, err = models(capsys, "list", "--root", str(tmp_path / "empty"))
    assert status == 1 and "nothing has been deployed" in err and err.count("\n") == 1


def test_pipeline_py_models_runs_these_functions(store: Path):
    """The command as users type it: `python pipeline.py models ...` (components/cli.py hands over to versions_cli)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, str(repo / "pipeline.py"), "models"]
    listed = subprocess.run(
        [*command, "list", "--root", str(store.parent)], capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    assert sum(line.startswith("* ") for line in listed.stdout.splitlines()) == 1
    rolled = subprocess.run(
        [*command, "rollback", "--root", str(store.parent)], capture_output=True, text=True, timeout=120
    )
    assert rolled.returncode == 0 and rolled.stdout.startswith(f"{NAME}: rolled back to version "), rolled.stderr
    assert current(store, NAME).run_id == "run-b"
    again = subprocess.run([*command, "promote", "zz", "--root", str(store.parent)], capture_output=True, text=True)
    assert again.returncode == 1 and again.stderr.startswith("pipeline.py models promote: unknown version 'zz'")


def test_readme_versions_commands_run_as_written(tmp_path: Path, three_models: list[Path]):
    """README "Versions, promote and rollback": its bash block, line by line, in a user's folder (VERSION filled in)."""
    import re
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    section = (repo / "README.md").read_text().split("### Versions, promote and rollback", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert [c.split()[:4] for c in commands] == [
        ["python", "pipeline.py", "models", "list"],
        ["python", "pipeline.py", "models", "rollback"],
        ["python", "pipeline.py", "models", "promote"],
        ["python", "pipeline.py", "models", "list"],
    ]
    user = tmp_path / "user"
    user.mkdir()
    for name in ("pipeline.py", "components"):
        (user / name).symlink_to(repo / name)
    store = user / "local_outputs" / LOCAL_STORE_DIRNAME
    for tag, directory in zip("abc", three_models, strict=True):
        publish(directory, store, model_name="sklearn-iris", run_id=f"run-{tag}")
    first = local_store.versions(store, "sklearn-iris")[-1].version
    outputs = []
    for command in commands:
        argv = [sys.executable, *command.replace("VERSION", first[:6]).split()[1:]]
        done = subprocess.run(argv, cwd=user, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout)
    assert "3 versions, * = live" in outputs[0]
    assert outputs[1].startswith("sklearn-iris: rolled back to version ")
    assert outputs[2].startswith(f"sklearn-iris: promoted version {first} ")
    assert [(r["run_id"], r["state"]) for r in json.loads(outputs[3])] == [
        ("run-a", "live"),
        ("run-b", "previous"),
        ("run-c", "rolled-back"),
    ]


@pytest.mark.slow
def test_two_kfp_local_runs_then_rollback_and_promote_as_a_user_types_them(tmp_path: Path):
    """Under kfp.local: the deploy step records each run's version and lineage, then `models` switches between them."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]

    def pipeline_py(*argv: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, str(repo / "pipeline.py"), *argv, "--root", "out"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    # A weak model first, then the default one, which beats it as the champion step requires.
    pipeline_py("run", "--hyperparameters", '{"C": 0.01}', "--min-accuracy", "0.5")
    pipeline_py("run")
    store = tmp_path / "out" / LOCAL_STORE_DIRNAME
    records = json.loads(pipeline_py("models", "list", "--json").stdout)
    assert [r["state"] for r in records] == ["live", "previous"]
    for record in records:
        assert record["run_id"] and record["run_name"] and record["run_id"] != record["run_name"]
        assert record["training_data_fingerprint"] and record["metrics"]["accuracy"] > 0.5
    assert records[0]["metrics"]["accuracy"] > records[1]["metrics"]["accuracy"]
    assert len({r["run_id"] for r in records}) == 2

    rolled = pipeline_py("models", "rollback")
    assert rolled.stdout.startswith(f"sklearn-iris: rolled back to version {records[1]['version']} ")
    assert current(store, "sklearn-iris").run_id == records[1]["run_id"]
    pipeline_py("models", "promote", records[0]["version"])
    assert current(store, "sklearn-iris").version == records[0]["version"]
