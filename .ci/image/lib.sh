# Shared settings for the image scripts (sourced, not executed).
# shellcheck shell=bash disable=SC2034  # sourced: the scripts that source it use these variables
#
# This machine has no Docker daemon and no registry access: containers run rootful with podman/buildah on the
# vfs storage driver with runc and cgroupfs. Every podman/buildah call goes through these arrays so that the
# build, the tests and a person debugging by hand all use the same storage.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Cache of the debootstrap base between CI runs on the same machine (never needed for correctness).
CACHE_DIR="${KFP_IMAGE_CACHE_DIR:-/var/cache/kfp-sklearn-kserve}"
BASE_MAX_AGE_DAYS="${KFP_IMAGE_BASE_MAX_AGE_DAYS:-7}"
DEBIAN_SUITE="bookworm"                # its python3 is 3.11, like the official python:3.11-slim
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
BASE_IMAGE_NAME="localhost/kfp-sklearn-kserve-base:${DEBIAN_SUITE}-py311"

PODMAN=(podman --storage-driver vfs --runtime runc --cgroup-manager cgroupfs)
BUILDAH=(buildah --storage-driver vfs)

# The project image name and tag live in components/constants.py (DEFAULT_IMAGE); read it, do not repeat it.
project_image() {
    python3 -c 'import runpy, sys; print(runpy.run_path(sys.argv[1])["DEFAULT_IMAGE"])' \
        "${REPO_ROOT}/components/constants.py"
}

project_version() {
    sed -n 's/^version = "\(.*\)"$/\1/p' "${REPO_ROOT}/pyproject.toml" | head -n 1
}

log() { printf '>> [image %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# Run a chatty command with its output in a log; show the log's tail only if it fails.
quietly() {
    local output
    output="$(mktemp)"
    if ! "$@" >"$output" 2>&1; then
        echo "error: $* failed; last lines:" >&2
        tail -n 40 "$output" >&2
        rm -f "$output"
        return 1
    fi
    rm -f "$output"
}
