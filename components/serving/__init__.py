"""The project's KServe predictor: a strict V1/V2 contract over a verified model directory, ONNX fast path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from components.serving.options import ServingOptionError, ServingOptions

if TYPE_CHECKING:
    from components.serving.server import build_model, run, serve

__all__ = ["ServingOptionError", "ServingOptions", "build_model", "run", "serve"]


def __getattr__(name: str) -> Any:
    # Lazy: importing kserve costs ~1 s and parses sys.argv; `pipeline.py` imports this package cheaply.
    if name in {"build_model", "run", "serve"}:
        from components.serving import server

        return getattr(server, name)
    raise AttributeError(name)
