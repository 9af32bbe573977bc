#!/usr/bin/env bash
# Install the daemonless container tools the image build and tests need (Debian/Ubuntu, as root).
# Idempotent: does nothing when they are already on PATH.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

missing=()
for tool in podman buildah debootstrap runc; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]} == 0)); then
    log "podman, buildah, debootstrap and runc already installed"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "error: ${missing[*]} missing and not root; install them with apt-get (see README)" >&2
    exit 1
fi
log "installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
# Another apt-get may hold the dpkg lock on a shared machine: wait for it rather than fail.
apt_opts=(-o DPkg::Lock::Timeout=300 -qq)
apt-get "${apt_opts[@]}" update
apt-get "${apt_opts[@]}" install -y podman buildah debootstrap runc >/dev/null
