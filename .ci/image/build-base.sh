#!/usr/bin/env bash
# Build a local stand-in for the official python:3.11-slim image, for machines that cannot pull from a registry.
#
# Debian bookworm minbase (debootstrap) + Debian's python3 (3.11) + a virtual environment AT /usr/local, so
# /usr/local/bin/python3 and /usr/local/bin/pip exist where the official image has them and the Dockerfile
# works unchanged on either base. The root filesystem tarball is cached under $CACHE_DIR, keyed by this
# scripts' content and rebuilt weekly (security updates); a second CI run reuses it in seconds, a machine
# without the cache builds it (1-3 min).
#
# Usage: build-base.sh [--refresh]   (--refresh ignores the cache, e.g. to pick up Debian security updates)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

refresh=0
[[ ${1:-} == --refresh ]] && refresh=1

key="$(cat "$0" "$(dirname "$0")/lib.sh" | sha256sum | cut -c1-16)"
tarball="${CACHE_DIR}/base-${DEBIAN_SUITE}-py311-${key}.tar"
# Rebuild weekly anyway, so the base picks up Debian security updates without anyone remembering --refresh.
if [[ ! -s $tarball || -n "$(find "$tarball" -mtime +"$BASE_MAX_AGE_DAYS" 2>/dev/null)" ]]; then
    refresh=1
fi
# The image label records which cache key built it, so a changed script never reuses a stale base.
if ((refresh == 0)) && [[ "$("${PODMAN[@]}" image inspect --format '{{ index .Labels "io.kfp-sklearn-kserve.base-cache-key" }}' \
    "$BASE_IMAGE_NAME" 2>/dev/null || true)" == "$key" ]]; then
    log "base image $BASE_IMAGE_NAME is current (key $key)"
    exit 0
fi

if ((refresh == 1)); then
    log "building the base root filesystem with debootstrap ($DEBIAN_SUITE minbase): no current cache"
    start=$SECONDS
    rootfs="$(mktemp -d /var/tmp/kfp-base-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    # mktemp makes the directory 0700; as the image's / that would deny every non-root USER.
    chmod 0755 "$rootfs"
    quietly debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR"
    cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $DEBIAN_MIRROR $DEBIAN_SUITE main
deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb $DEBIAN_SECURITY_MIRROR $DEBIAN_SUITE-security main
SOURCES
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    # debootstrap installs the release as published; take the security updates too.
    quietly chroot "$rootfs" apt-get -qq update
    quietly env DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get -qq -y upgrade
    # The official image's layout: python3 and pip in /usr/local/bin.
    chroot "$rootfs" /usr/bin/python3 -m venv /usr/local
    chroot "$rootfs" /usr/local/bin/python3 -c 'import sys, ssl, venv, ensurepip; assert sys.version_info[:2] == (3, 11)'
    # Keep the base lean: package caches, indexes, docs and man pages are never needed at run time.
    quietly chroot "$rootfs" apt-get -qq clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log "$rootfs"/etc/resolv.conf
    find "$rootfs" -name __pycache__ -type d -prune -exec rm -rf {} +
    mkdir -p "$CACHE_DIR"
    rm -f "$CACHE_DIR"/base-"$DEBIAN_SUITE"-py311-*.tar
    tar --numeric-owner -C "$rootfs" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    log "base root filesystem built in $((SECONDS - start)) s: $(du -h "$tarball" | cut -f1)"
else
    log "importing the cached base root filesystem $tarball"
fi

previous="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$BASE_IMAGE_NAME" 2>/dev/null || true)"
"${PODMAN[@]}" import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL io.kfp-sklearn-kserve.base-cache-key=$key" \
    --change "LABEL org.opencontainers.image.description=Debian $DEBIAN_SUITE minbase with python3 in a venv at /usr/local" \
    "$tarball" "$BASE_IMAGE_NAME" >/dev/null
# Drop the base this import replaced (vfs keeps full copies); it stays while a built image still uses it.
if [[ -n $previous && $previous != "$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$BASE_IMAGE_NAME")" ]]; then
    "${PODMAN[@]}" rmi "$previous" >/dev/null 2>&1 || true
fi
log "base image ready: $BASE_IMAGE_NAME"
