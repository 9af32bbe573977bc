"""Where `pipeline.py run` executes each step: in this Python environment, or in the project image over a Docker API.

`build_runner("docker", ...)` returns a `kfp.local.DockerRunner` set up so that a containerized run behaves like
a subprocess run for the person who started it:

- **Same paths.** kfp mounts the pipeline root at its own path; the local model store is mounted the same way, so
  a `local` deploy inside the container lands in the host's store and the live pointer's paths are valid on the
  host (`pipeline.py serve` reads them). Input files named by path (a dataset CSV) are mounted read-only, and
  steps start in the caller's working directory, so a relative path means what it means on the host.
- **Same owner.** Steps run as the invoking user's uid:gid, not as the image's UID 1000. Files the steps write are
  then owned by whoever started the run, exactly as with the subprocess runner: no world-writable directories, no
  chown (which needs root), nothing on the host the user cannot delete. With a rootless engine (rootless podman or
  Docker) the container's root *is* the invoking user, so steps run as 0:0 there. Both directories are created
  here, before any container starts: an engine creates a missing bind source as root, which no step could write.
- **Real exit codes.** kfp 2.17.3 starts each step with `auto_remove=True`, then asks the engine for the output
  and exit code of a container that may already be gone. On 404 (Docker; podman 4.3 too, depending on timing)
  kfp assumes success, even for a failed step; on podman's 500 "no such container" it raises that, hiding the
  step's own error. Both were seen here with podman 4.3.1. So kfp's container launcher is replaced with one that
  removes the container only after reading its exit code; see `_run_container`.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from components.constants import DEFAULT_IMAGE

RUNNER_SUBPROCESS = "subprocess"
RUNNER_DOCKER = "docker"
RUNNERS = (RUNNER_SUBPROCESS, RUNNER_DOCKER)
"""Choices of `pipeline.py run --runner`."""

DOCKER_PACKAGE_PIN = "docker==7.2.0"
"""The Docker SDK kfp.local.DockerRunner needs (requirements.lock pins the same)."""
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
"""Where the Docker SDK looks when DOCKER_HOST is unset."""
PODMAN_API_SCRIPT = ".ci/podman-docker-api.sh"
"""Starts podman's Docker-compatible API and prints the DOCKER_HOST to export."""
API_TIMEOUT_S = 30
"""Per-request timeout of the preflight checks (a healthy local engine answers in milliseconds)."""
CONTAINER_HOME = "/tmp"  # noqa: S108  # the step container's own /tmp, private to it and gone with it
"""HOME inside a step: the invoking uid has no home (or no passwd entry) in the image; /tmp is writable by all."""

STEP_CONTAINER_PREFIX = "Step container"
"""Starts the line naming each step's container and image in the run's log."""

_RUN_ONLY_ARGS = frozenset({"detach", "stdout", "stderr", "remove", "auto_remove", "stream"})
"""`containers.run` arguments that `containers.create` does not take; the launcher handles what they did."""


class RunnerUnavailableError(RuntimeError):
    """The requested runner cannot run here; the message is one line saying how to get what is missing."""


def build_runner(
    runner: str,
    *,
    pipeline_root: Path,
    local_store: Path,
    image: str = DEFAULT_IMAGE,
    read_only: Sequence[Path] = (),
) -> Any:
    """Return the `kfp.local` runner for `pipeline.py run --runner`.

    Args:
        runner: `subprocess` (this Python environment) or `docker` (every step in `image` over a Docker API:
            Docker, or podman's Docker-compatible socket through DOCKER_HOST).
        pipeline_root: The run's pipeline root, later given to `kfp.local.init`; created here (docker).
        local_store: The local model store the deploy step writes; created and mounted at this path (docker).
        image: The image the compiled steps name; checked to exist in the engine before the run starts (docker).
        read_only: Host files or directories a step reads by path (a dataset file); mounted read-only (docker).

    Returns:
        A `kfp.local.SubprocessRunner` or `kfp.local.DockerRunner`, for `kfp.local.init(runner=...)`.

    Raises:
        RunnerUnavailableError: Unknown runner, no Docker SDK, no Docker API reachable, or the image not in it.
    """
    from kfp import local

    if runner == RUNNER_SUBPROCESS:
        return local.SubprocessRunner(use_venv=False)
    if runner != RUNNER_DOCKER:
        raise RunnerUnavailableError(f"unknown runner '{runner}': choose one of {', '.join(RUNNERS)}")
    try:
        import docker
    except ImportError:
        raise RunnerUnavailableError(
            f"--runner docker needs the Docker SDK for Python: pip install {DOCKER_PACKAGE_PIN}"
        ) from None

    info = _engine_info(docker, image)
    for directory in (pipeline_root, local_store):
        directory.mkdir(parents=True, exist_ok=True)
    mounts = [docker.types.Mount(str(local_store), str(local_store), type="bind")]
    mounts += [docker.types.Mount(str(path), str(path), type="bind", read_only=True) for path in read_only]
    security = [str(option) for option in info.get("SecurityOptions") or []]
    options: dict[str, Any] = {
        "user": "0:0" if any("name=rootless" in option for option in security) else f"{os.getuid()}:{os.getgid()}",
        "mounts": mounts,
        "environment": {"HOME": CONTAINER_HOME},
        # Relative paths in the arguments (`--dataset data.csv`) resolve as they do for the subprocess runner.
        "working_dir": str(Path.cwd()),
    }
    if any("name=selinux" in option for option in security):
        # Bind mounts given as `mounts` cannot ask for a relabel (`:z`, which kfp adds to its own pipeline-root
        # mount): keep SELinux from blocking the store for these local-run containers instead of relabeling it.
        options["security_opt"] = ["label=disable"]
    _use_exit_code_safe_launcher()
    return local.DockerRunner(**options)


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def _engine_info(docker: Any, image: str) -> dict[str, Any]:
    """The engine's `info`, after checking that it answers and has `image`; one-line errors otherwise."""
    host = _docker_host()
    hint = (
        f'start Docker, or podman\'s Docker API (eval "$({PODMAN_API_SCRIPT} start)" exports DOCKER_HOST), '
        "or use --runner subprocess"
    )
    try:
        client = docker.from_env(timeout=API_TIMEOUT_S)
    except docker.errors.DockerException:
        raise RunnerUnavailableError(f"--runner docker: no Docker API at {host}: {hint}") from None
    try:
        try:
            client.ping()
            info: dict[str, Any] = client.info()
        except (docker.errors.DockerException, OSError):
            raise RunnerUnavailableError(f"--runner docker: no Docker API at {host}: {hint}") from None
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise RunnerUnavailableError(
                f"--runner docker: image {image} is not in the engine at {host}: build it first "
                "(make image; without a Docker daemon: sudo make image-ci)"
            ) from None
    finally:
        client.close()
    return info


def _use_exit_code_safe_launcher() -> None:
    """Make kfp.local's Docker task handler launch steps with `_run_container` (idempotent).

    kfp 2.17.3's `DockerTaskHandler.run` calls the module-level `run_docker_container` at call time; swapping that
    name is the only seam (the handler is chosen by `type(runner) is DockerRunner`, so a subclass is not run).
    """
    from kfp.local import docker_task_handler

    if getattr(docker_task_handler, "run_docker_container", None) is not _run_container:
        docker_task_handler.run_docker_container = _run_container


def _run_container(client: Any, image: str, command: list[str], volumes: dict[str, Any], **run_args: Any) -> int:
    """Run one step: start the container, stream its output, return its exit code, then remove it.

    Same contract as kfp's `run_docker_container`, without `auto_remove`: the container is removed only after its
    exit code has been read, so the engine is never asked about a container it has already deleted (Docker's 404 /
    podman's 500), and a failed step is reported as failed with its own output.
    """
    import docker

    create_args = {key: value for key, value in run_args.items() if key not in _RUN_ONLY_ARGS}
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        client.images.pull(image)
    container = client.containers.create(image=image, command=command, volumes=volumes, **create_args)
    try:
        print(f"{STEP_CONTAINER_PREFIX} {container.short_id} from {image}")
        container.start()
        _print_lines(container.logs(stream=True, follow=True))
        return int(container.wait()["StatusCode"])
    finally:
        # Also on Ctrl-C, so no step container outlives the run. Cleanup is best effort: a container that cannot be
        # removed is reported, not allowed to replace the step's own outcome.
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            print(f"could not remove step container {container.short_id}: {exc.explanation or exc}")


def _print_lines(chunks: Iterable[bytes]) -> None:
    """Print a container's output line by line, however the engine splits it.

    kfp indents each `print` of a step's output, and the progress display reads error lines whole: a line printed
    in pieces would come out as `components.data    .    DataValidationError    :`.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        *lines, pending = pending.split("\n")
        for line in lines:
            print(line)
    pending += decoder.decode(b"", final=True)
    if pending:
        print(pending)
