"""The one check for model and Kubernetes object names, applied by every command before any work starts.

A model name becomes a local directory, a URL path segment and an InferenceService name. KServe names the
predictor Deployment `<name>-predictor` (and `<name>-canary-predictor` for a Standard-mode canary), and a
Deployment's name is a DNS-1123 label of at most 63 characters, so a model name is a DNS-1035 label of at most
63 - len("-canary-predictor") = 46 characters on every target: a name that works locally also works on a cluster.
"""

from __future__ import annotations

import re
from typing import Final

from components.constants import CANARY_PREDICTOR_NAME

MAX_LABEL_LENGTH: Final = 63
"""Kubernetes' limit for a DNS label (namespaces, service accounts, runtimes)."""
MAX_MODEL_NAME_LENGTH: Final = MAX_LABEL_LENGTH - len(f"-{CANARY_PREDICTOR_NAME}-predictor")
"""46: the longest InferenceService name whose canary Deployment name is still a valid label."""

# \Z, not $: `$` also matches before a trailing newline, and "sklearn-iris\n" is not a name.
_DNS1035: Final = re.compile(r"[a-z](?:[-a-z0-9]*[a-z0-9])?\Z")
_DNS1123_LABEL: Final = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\Z")


class InvalidNameError(ValueError):
    """A name Kubernetes (and so this project) would refuse; the message says which rule it breaks."""


def check_model_name(name: object) -> str:
    """Return `name` if it is a valid model / InferenceService name, else raise `InvalidNameError`."""
    return _check("model name", name, _DNS1035, MAX_MODEL_NAME_LENGTH, "starting with a letter")


def check_dns_label(kind: str, name: object) -> str:
    """Return `name` if it is a DNS-1123 label (namespace, service account, runtime), else raise."""
    return _check(kind, name, _DNS1123_LABEL, MAX_LABEL_LENGTH, "starting with a letter or digit")


def _check(kind: str, name: object, pattern: re.Pattern[str], limit: int, start: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidNameError(f"{kind} must be a non-empty string")
    shown = repr(name if len(name) <= 80 else name[:77] + "...")
    if len(name) > limit:
        raise InvalidNameError(f"{kind} {shown} is {len(name)} characters long; at most {limit} are allowed")
    if not pattern.match(name):
        raise InvalidNameError(
            f"{kind} {shown} must be lowercase letters, digits and '-', {start} and ending with a letter or digit"
        )
    return name
