"""What every fake server in these tests shares: a daemon-thread HTTP server on 127.0.0.1 that answers JSON."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps pytest's output clean and answers JSON."""

    def log_message(self, *_args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        """The request body (empty when there is none)."""
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply_json(self, code: int, payload: Any) -> None:
        """Send `payload` as a JSON response with status `code`."""
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LoopbackServer:
    """Serves one handler class on an ephemeral loopback port until `stop()`."""

    def __init__(self) -> None:
        self.base_url = ""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> str:
        """Start serving `handler`; returns `http://127.0.0.1:<port>`."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.base_url

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
