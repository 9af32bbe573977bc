"""Slow clients cannot hold the HTTP server: timeouts for idle, headers and body, and a cap on connections.

uvicorn (0.54) times out only the keep-alive gap after a response. A connection that never sends a byte, sends
headers one byte a minute, or stops half-way through a body is kept forever, and `limit_concurrency` answers 503 to
new requests but keeps accepting (and holding) sockets. `GuardedHttpToolsProtocol` is uvicorn's httptools protocol
with a deadline per connection for the phase it is in:

- idle (connected, no byte of a request yet): `idle_timeout` (the keep-alive timeout);
- headers (first byte seen, headers incomplete): `header_timeout` in total, however slowly bytes trickle in;
- body (headers done, body incomplete): `body_timeout` in total;
- handling (request complete): no deadline; a slow model is not the client's fault.

A client that runs out of time gets `408` (if no response has started) and the connection is closed. At
`max_connections` open connections, a new connection evicts the oldest one that is idle or still sending its
request (never one being answered), so legitimate requests keep getting through while slow ones hold sockets.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

_IDLE, _HEADERS, _BODY, _HANDLING = "idle", "headers", "body", "handling"
_EVICTABLE = frozenset({_IDLE, _HEADERS, _BODY})
_EVICTION_LOG_EVERY_S = 10.0
_last_eviction_log = -_EVICTION_LOG_EVERY_S
_SWEEP_EVERY_S = 1.0
"""How often expired connections are looked for: a deadline is met within this much (or half a timeout)."""
_SWEEP_ATTRIBUTE = "_slow_client_sweep"
"""Marks a uvicorn ServerState whose sweep is running (one per server process)."""


def _schedule_sweep(loop: asyncio.AbstractEventLoop, connections: set[Any], interval: float) -> None:
    def sweep() -> None:
        now = loop.time()
        for connection in list(connections):
            deadline = getattr(connection, "_deadline", None)
            if deadline is not None and deadline <= now:
                connection._expire()
        loop.call_later(interval, sweep)

    loop.call_later(interval, sweep)


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection deadlines (seconds) and the connection cap of one server process (validated by ServingOptions)."""

    idle_timeout: float
    """Before the first byte of a request (after a response uvicorn's own keep-alive timeout applies)."""
    header_timeout: float
    body_timeout: float
    max_connections: int


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus per-phase deadlines and eviction at the connection cap.

    A phase change only stores a deadline (no timer per request); one sweep per server, every `_SWEEP_EVERY_S`
    (at most), closes the connections whose deadline has passed.
    """

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        """Same arguments as uvicorn's protocol, plus the limits (bound with functools.partial in `config.http`)."""
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._phase = _IDLE
        self._deadline: float | None = None
        self._opened = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection, evict the oldest slow one at the cap, and start the idle clock."""
        super().connection_made(transport)
        self._opened = now = self.loop.time()
        self._deadline = now + self._limits.idle_timeout
        if len(self.connections) > self._limits.max_connections:
            self._evict_one()
        if not getattr(self.server_state, _SWEEP_ATTRIBUTE, False):
            setattr(self.server_state, _SWEEP_ATTRIBUTE, True)
            interval = min(_SWEEP_EVERY_S, self._limits.header_timeout / 2, self._limits.idle_timeout / 2)
            _schedule_sweep(self.loop, self.connections, interval)

    def data_received(self, data: bytes) -> None:
        """The first byte of a request starts the header clock (uvicorn cancels its keep-alive timer here)."""
        if self._phase == _IDLE:
            self._phase = _HEADERS
            self._deadline = self.loop.time() + self._limits.header_timeout
        super().data_received(data)

    def on_headers_complete(self) -> None:
        """Headers in: the body clock starts."""
        super().on_headers_complete()
        self._phase = _BODY
        self._deadline = self.loop.time() + self._limits.body_timeout

    def on_message_complete(self) -> None:
        """The whole request is in: no deadline while the model answers."""
        super().on_message_complete()
        self._phase = _HANDLING
        self._deadline = None

    def on_response_complete(self) -> None:
        """Back to idle (uvicorn also arms its keep-alive timer, or starts a pipelined request)."""
        self._phase = _IDLE
        self._deadline = self.loop.time() + self._limits.idle_timeout
        super().on_response_complete()

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._phase in (_HEADERS, _BODY):
            self._send_408(f"request {self._phase} not received within the time limit; connection closed")
        self.transport.close()

    def _send_408(self, message: str) -> None:
        if self.cycle is not None and self.cycle.response_started:
            return
        body = orjson.dumps({"error": message})
        head = (
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        self.transport.write(head + body)

    def _evict_one(self) -> None:
        candidates = [
            c
            for c in self.connections
            if c is not self and isinstance(c, GuardedHttpToolsProtocol) and c._phase in _EVICTABLE
        ]
        if not candidates:
            # Every other connection is being answered: this one waits its turn as usual (uvicorn's
            # limit_concurrency, when set, answers it 503).
            return
        oldest = min(candidates, key=lambda c: c._opened)
        global _last_eviction_log
        now = self.loop.time()
        if now - _last_eviction_log > _EVICTION_LOG_EVERY_S:  # an attack must not become a flood of log lines
            _last_eviction_log = now
            logger.warning(
                "connection cap (%d) reached: closing the oldest idle or slow connections",
                self._limits.max_connections,
            )
        oldest._expire()
