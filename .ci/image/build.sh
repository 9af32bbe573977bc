#!/usr/bin/env bash
# CI entry point: install the container tools if missing, build (or reuse) the debootstrap base, then build the
# project image from the Dockerfile with buildah, tagged as components.constants.DEFAULT_IMAGE.
#
# Usage: .ci/image/build.sh [--refresh-base]
# Needs root (rootful podman/buildah, debootstrap, apt-get) and network access to Debian mirrors and PyPI.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

base_args=()
[[ ${1:-} == --refresh-base ]] && base_args=(--refresh)

total_start=$SECONDS
# Two CI runs on one machine share the cache and the image tag: take turns.
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/build.lock"
flock 9
"$(dirname "$0")/install-tools.sh"
"$(dirname "$0")/build-base.sh" "${base_args[@]}"

image="$(project_image)"
build_args=(
    --build-arg "BASE_IMAGE=$BASE_IMAGE_NAME"
    --build-arg "VERSION=$(project_version)"
    --build-arg "REVISION=$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
    --build-arg "SOURCE_URL=$(git -C "$REPO_ROOT" remote get-url origin 2>/dev/null || echo unknown)"
)
# Behind a TLS-intercepting proxy pip inside the build needs this machine's CA bundle: mount it for the RUN
# steps only (never copied into a layer) and point pip at it. Without such a bundle pip uses the image's own.
ca_bundle="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
mounts=()
if [[ -s $ca_bundle ]]; then
    mounts=(-v "$ca_bundle:/etc/ssl/certs/host-ca-bundle.crt:ro")
    build_args+=(--build-arg "PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt")
fi
# A configured index (a PyPI mirror) must be honoured in the build as on the host.
host_index="$(pip config get global.index-url 2>/dev/null || true)"
index_url="${PIP_INDEX_URL:-$host_index}"
[[ -n $index_url && $index_url != file:* ]] && build_args+=(--build-arg "PIP_INDEX_URL=$index_url")

# The image is a function of its build context (what .dockerignore admits), the Dockerfile and the base: when
# none changed since the last build on this machine, reuse it (a second CI run on the same commit skips ~3 min).
context_key="$(
    cd "$REPO_ROOT"
    {
        "${PODMAN[@]}" image inspect --format '{{.Id}}' "$BASE_IMAGE_NAME"
        find Dockerfile .dockerignore pyproject.toml requirements.lock README.md components .ci/image/build.sh \
            .ci/image/lib.sh -type f \
            ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 2>/dev/null | sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
)"
key_label="io.kfp-sklearn-kserve.context-key"
if [[ "$("${PODMAN[@]}" image inspect --format "{{ index .Labels \"$key_label\" }}" "$image" 2>/dev/null || true)" \
    == "$context_key" ]]; then
    log "image $image is current (context key $context_key): not rebuilt"
    exit 0
fi
build_args+=(--label "$key_label=$context_key")

previous="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
log "building $image from $BASE_IMAGE_NAME with buildah"
start=$SECONDS
"${BUILDAH[@]}" bud --isolation chroot --network host --layers=false \
    "${mounts[@]}" "${build_args[@]}" \
    --file "$REPO_ROOT/Dockerfile" --tag "$image" "$REPO_ROOT"
build_seconds=$((SECONDS - start))

size_bytes="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$image")"
# vfs stores every image as a full copy: drop the one this build replaced (only ours, only if now untagged).
current="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$image")"
if [[ -n $previous && $previous != "$current" ]]; then
    "${PODMAN[@]}" rmi "$previous" >/dev/null 2>&1 || true
fi
log "image $image built in ${build_seconds} s, $((size_bytes / 1000000)) MB (all image steps: $((SECONDS - total_start)) s)"
