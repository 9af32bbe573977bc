"""Podman with CI's settings, shared by the image fixtures and tests (a uniquely named module, not conftest)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIRE_IMAGE_ENV = "KFP_SKLEARN_KSERVE_REQUIRE_IMAGE"
"""Set to 1 (CI does) to make "no podman / image not built / image stale" a failure instead of a skip."""

# Same storage and runtime as .ci/image/lib.sh: rootful podman on vfs with runc and cgroupfs (no daemon, no
# overlay, no systemd on these machines).
PODMAN: tuple[str, ...] = ("podman", "--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
# runc cannot raise rlimits above this sandbox's hard limit; host networking needs no CNI setup.
RUN_OPTIONS: tuple[str, ...] = (
    "--network",
    "host",
    "--ulimit",
    "nofile=4096:4096",
    "--ulimit",
    "nproc=4096:4096",
)
# How a hardened pod runs it: read-only root filesystem with a writable /tmp (FIELD-NOTES, Kubernetes security).
READ_ONLY_OPTIONS: tuple[str, ...] = ("--read-only", "--tmpfs", "/tmp:rw,size=256m,mode=1777")


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run podman with CI's storage settings; on failure the error shows podman's stderr."""
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} ... exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


def run_in_image(
    image: str,
    *command: str,
    entrypoint: Sequence[str] | None = None,
    volumes: Sequence[str] = (),
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run one short-lived container the hardened way (read-only root, tmpfs /tmp), without raising on failure."""
    options = [*RUN_OPTIONS, *READ_ONLY_OPTIONS]
    for volume in volumes:
        options += ["--volume", volume]
    if entrypoint is not None:
        # Like Kubernetes `command:` (replaces the image's ENTRYPOINT); `command` here plays `args:`.
        options += ["--entrypoint", json.dumps(list(entrypoint))]
    return podman("run", "--rm", *options, image, *command, timeout=timeout, check=False)
