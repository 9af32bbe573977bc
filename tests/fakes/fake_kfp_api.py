"""The KFP v2beta1 calls `kfp.Client` makes for runs and recurring runs (and a pipeline's versions), over real HTTP."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from tests.fakes.loopback_http import LoopbackServer, QuietHandler


class FakeKfpApi:
    """Find-or-create an experiment, create a run or recurring run, list a pipeline's (one, newest) version; records
    every request for assertions."""

    def __init__(self, *, refuse_runs_with: int | None = None) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.experiments: dict[str, str] = {}
        self.refuse_runs_with = refuse_runs_with
        self.base_url = ""
        self._http = LoopbackServer()

    def runs(self) -> list[dict[str, Any]]:
        """Bodies of the create-run requests."""
        return [body for method, path, body in self.requests if method == "POST" and path == "/apis/v2beta1/runs"]

    def recurring_runs(self) -> list[dict[str, Any]]:
        """Bodies of the create-recurring-run requests (the JSON as sent: numbers stay numbers)."""
        return [b for method, path, b in self.requests if method == "POST" and path == "/apis/v2beta1/recurringruns"]

    def _answer(self, method: str, path: str, query: str, body: Any) -> tuple[int, dict[str, Any]]:
        if method == "GET" and path == "/apis/v2beta1/healthz":
            return 200, {"multi_user": False}
        if method == "GET" and path == "/apis/v2beta1/experiments":
            filter_json = urllib.parse.parse_qs(query).get("filter", ["{}"])[0]
            predicates = json.loads(filter_json).get("predicates", [])
            wanted = {p.get("string_value", p.get("stringValue")) for p in predicates}
            found = [{"experiment_id": i, "display_name": n} for n, i in self.experiments.items() if n in wanted]
            return 200, {"experiments": found, "total_size": len(found)}
        if method == "POST" and path == "/apis/v2beta1/experiments":
            experiment_id = f"exp-{len(self.experiments) + 1}"
            self.experiments[body["display_name"]] = experiment_id
            return 200, {"experiment_id": experiment_id, "display_name": body["display_name"]}
        if method == "POST" and path == "/apis/v2beta1/runs":
            if self.refuse_runs_with:
                return self.refuse_runs_with, {"error_message": "refused by the fake", "code": 7}
            return 200, {
                "run_id": f"run-{len(self.runs())}",
                "display_name": body.get("display_name"),
                "state": "PENDING",
            }
        if method == "POST" and path == "/apis/v2beta1/recurringruns":
            if self.refuse_runs_with:
                return self.refuse_runs_with, {"error_message": "refused by the fake", "code": 7}
            recurring_run_id = f"recurring-{len(self.recurring_runs())}"
            return 200, {"recurring_run_id": recurring_run_id, "display_name": body.get("display_name")}
        if method == "GET" and path.startswith("/apis/v2beta1/pipelines/") and path.endswith("/versions"):
            pipeline_id = path.split("/")[4]
            versions = [{"pipeline_id": pipeline_id, "pipeline_version_id": f"{pipeline_id}-v2"}]
            return 200, {"pipeline_versions": versions, "total_size": 1}
        return 404, {"error_message": f"no route {method} {path}"}

    def start(self) -> str:
        """Serve on an ephemeral port; returns the base URL."""
        fake = self

        class Handler(QuietHandler):
            def _handle(self) -> None:
                raw = self.read_body()
                body = json.loads(raw) if raw else None
                path, _, query = self.path.partition("?")
                fake.requests.append((self.command, path, body))
                self.reply_json(*fake._answer(self.command, path, query, body))

            do_GET = do_POST = _handle

        self.base_url = self._http.serve(Handler)
        return self.base_url

    def stop(self) -> None:
        """Shut the server down."""
        self._http.stop()
