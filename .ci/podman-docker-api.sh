#!/usr/bin/env bash
# podman's Docker-compatible API on a unix socket, for `python pipeline.py run --runner docker` (kfp.local.DockerRunner)
# on a machine without Docker. CI starts it before `make test` and stops it after.
#
#   eval "$(.ci/podman-docker-api.sh start)"   # starts the service (or reuses a running one), prints the DOCKER_HOST
#   .ci/podman-docker-api.sh stop               # stops the service this script started
#
# The socket is $KFP_PODMAN_SOCKET, by default /run/kfp-sklearn-kserve/podman.sock for root, else
# $XDG_RUNTIME_DIR/kfp-sklearn-kserve/podman.sock. Its directory also holds the service's pid, log and containers.conf.
# The service uses the same storage, runtime and cgroup manager as the image build (.ci/image/lib.sh), so it sees
# the image that build made.
set -euo pipefail
# shellcheck source=image/lib.sh
source "$(dirname "$0")/image/lib.sh"

if [[ $(id -u) == 0 ]]; then
    default_socket=/run/kfp-sklearn-kserve/podman.sock
else
    default_socket="${XDG_RUNTIME_DIR:-/tmp/kfp-sklearn-kserve-$(id -u)}/kfp-sklearn-kserve/podman.sock"
fi
SOCKET="${KFP_PODMAN_SOCKET:-$default_socket}"
STATE_DIR="$(dirname "$SOCKET")"
PID_FILE="$STATE_DIR/podman-service.pid"
LOG_FILE="$STATE_DIR/podman-service.log"
CONF_FILE="$STATE_DIR/containers.conf"
START_TIMEOUT_S=60

usage() {
    echo "usage: $0 start|stop|status" >&2
    exit 2
}

answers() { curl --silent --fail --max-time 5 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; }

running_pid() {
    local pid
    [[ -s $PID_FILE ]] || return 1
    pid="$(<"$PID_FILE")"
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

write_conf() {
    # runc cannot set rlimits above the sandbox's hard limits, and podman's default asks for more ("error setting
    # rlimit type 7" on every container start): ask for what the image tests ask (tests/image/image_helpers.py).
    cat >"$CONF_FILE" <<'EOF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
EOF
}

start() {
    command -v podman >/dev/null || {
        echo "podman is not installed (.ci/image/install-tools.sh installs it)" >&2
        exit 1
    }
    mkdir -p "$STATE_DIR"
    chmod 700 "$STATE_DIR"
    if running_pid >/dev/null && answers; then
        log "podman Docker API already running on $SOCKET (pid $(running_pid))"
    else
        write_conf
        rm -f "$SOCKET"
        # --time=0: no idle timeout, the service lives until `stop` (which kills exactly this pid).
        CONTAINERS_CONF="$CONF_FILE" nohup "${PODMAN[@]}" system service --time=0 "unix://$SOCKET" \
            >"$LOG_FILE" 2>&1 </dev/null &
        echo $! >"$PID_FILE"
        local waited=0
        until answers; do
            if ! running_pid >/dev/null; then
                echo "podman system service exited; last lines of $LOG_FILE:" >&2
                tail -n 20 "$LOG_FILE" >&2
                exit 1
            fi
            if ((waited >= START_TIMEOUT_S * 2)); then
                echo "podman system service did not answer on $SOCKET within ${START_TIMEOUT_S}s" >&2
                stop
                exit 1
            fi
            sleep 0.5
            waited=$((waited + 1))
        done
        log "podman Docker API listening on $SOCKET (pid $(running_pid), log $LOG_FILE)"
    fi
    echo "export DOCKER_HOST=unix://$SOCKET"
}

stop() {
    local pid waited=0
    if pid="$(running_pid)"; then
        kill -TERM "$pid"
        while kill -0 "$pid" 2>/dev/null && ((waited < 20)); do
            sleep 0.5
            waited=$((waited + 1))
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        log "podman Docker API on $SOCKET stopped (pid $pid)"
    fi
    rm -f "$PID_FILE" "$SOCKET"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status)
    if running_pid >/dev/null && answers; then
        echo "running on $SOCKET (pid $(running_pid)): export DOCKER_HOST=unix://$SOCKET"
    else
        echo "not running ($SOCKET)"
        exit 1
    fi
    ;;
*) usage ;;
esac
