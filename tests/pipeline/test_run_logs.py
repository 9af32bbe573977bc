"""One log file per run, even for runs started in the same second."""

import time

from components import local_run


def test_two_runs_started_in_the_same_second_get_their_own_log_file(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda _format: "20261202-041500")
    first, second = local_run.new_log_path(tmp_path), local_run.new_log_path(tmp_path)
    assert first != second
    assert first.parent == second.parent == tmp_path / "logs"
    assert first.name.startswith("run-20261202-041500-") and second.name.startswith("run-20261202-041500-")
    # Claimed at once (created empty), so a third run in that second cannot pick either name.
    assert first.read_text() == second.read_text() == ""
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted([first.name, second.name])
