"""Fixtures for the container image tests: the built image, its configuration, its root filesystem.

The image is built by `.ci/image/build.sh` (`make image-ci`) before the tests, never by them: a build takes
minutes. Without podman or without the image these tests skip with the reason, unless
KFP_SKLEARN_KSERVE_REQUIRE_IMAGE=1 (set by CI), where a missing image is a failure, not a silent skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.constants import DEFAULT_IMAGE
from tests.image.image_helpers import PODMAN, REQUIRE_IMAGE_ENV, podman


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_IMAGE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_IMAGE_ENV}=1: the image must be tested here)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def image() -> str:
    """The project image, as tagged by `.ci/image/build.sh`; skips (or fails in CI) when it is not there."""
    if shutil.which("podman") is None:
        _unavailable("podman is not installed (CI installs it: .ci/image/build.sh, or `make image-ci`)")
    found = subprocess.run([*PODMAN, "image", "exists", DEFAULT_IMAGE], capture_output=True, text=True, timeout=60)
    if found.returncode != 0:
        _unavailable(f"image {DEFAULT_IMAGE} is not built in podman's vfs storage (build it: make image-ci)")
    return DEFAULT_IMAGE


@pytest.fixture(scope="session")
def image_config(image: str) -> dict:
    """`podman image inspect` of the image (Config, Labels, Size)."""
    return json.loads(podman("image", "inspect", image).stdout)[0]


@pytest.fixture(scope="session")
def image_rootfs(image: str) -> Iterator[Path]:
    """The image's root filesystem, mounted read-only on the host: inspect files without starting a container."""
    mounted = podman("image", "mount", image, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount the image (needs rootful podman): {mounted.stderr.strip()[-300:]}")
    try:
        yield Path(mounted.stdout.strip())
    finally:
        podman("image", "unmount", image, check=False)
