#!/usr/bin/env bash
# Provision the test Podman engine and the local images berth's podman tests need (make podman-engine).
#
# Usage: bash scripts/setup_podman.sh [VENV]     build/refresh; VENV defaults to ./.venv
#        bash scripts/setup_podman.sh --stop      stop the service this script started
#
# 1. Engine. As root: install Debian's podman if it is absent, then start `podman system service`
#    in the background (its own process group, log in $BERTH_PODMAN_LOG, pid in $BERTH_PODMAN_PID)
#    on its own unix socket, $BERTH_PODMAN_SOCKET (default /run/berth-podman/podman.sock; the
#    tests find it there, tests/support/engines.py), waiting at most $BERTH_PODMAN_WAIT seconds.
#    The engine is confined to this test setup: its containers.conf and storage.conf
#    ($BERTH_PODMAN_STATE, default /usr/local/lib/berth-podman) give it its own storage, run
#    directory, network configuration and event log, so the machine's own Podman (if any) and
#    its containers and images are untouched. In sandboxes whose root lacks CAP_SYS_RESOURCE its
#    OCI runtime is scripts/images/engine/runc-sandbox-shim (see there and docs/containers.md),
#    which fits the rlimits, oom_score_adj and capabilities the sandbox cannot grant.
# 2. Images, built locally into that storage exactly as setup_docker.sh builds Docker's
#    (scripts/lib/images.sh): gpustack/runtime:pause, berth-test/busybox:local and
#    berth-test/vllm-cpu:local (only when VENV imports vllm), each skipped when current.
#
# To use the engine by hand: `bash scripts/setup_podman.sh --env` prints the variables (CONTAINERS_CONF,
# CONTAINERS_STORAGE_CONF) for its CLI; gpustack-runtime (berth --deployer container) needs
# GPUSTACK_RUNTIME_DEPLOY=podman GPUSTACK_RUNTIME_PODMAN_HOST=unix://$BERTH_PODMAN_SOCKET.
#
# Not root, no apt-get, or a service that fails to start: says why and exits 0 (the podman tests
# then skip), except under CI=true, where it exits 1.
set -euo pipefail
shopt -s inherit_errexit  # set -e holds inside $(...) too

ROOT="$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_ARG="${1:-$ROOT/.venv}"
STATE="${BERTH_PODMAN_STATE:-/usr/local/lib/berth-podman}"
STORAGE="${BERTH_PODMAN_STORAGE:-/var/lib/berth-podman}"
RUN_DIR="${BERTH_PODMAN_RUN:-/run/berth-podman}"
SOCKET="${BERTH_PODMAN_SOCKET:-$RUN_DIR/podman.sock}"
SERVICE_LOG="${BERTH_PODMAN_LOG:-/var/log/berth-podman.log}"
SERVICE_PID="${BERTH_PODMAN_PID:-/run/berth-podman.pid}"
SERVICE_WAIT="${BERTH_PODMAN_WAIT:-60}"

PROVISION_NAME=setup_podman
# shellcheck source-path=SCRIPTDIR source=lib/provision.sh
source "$ROOT/scripts/lib/provision.sh"

export CONTAINERS_CONF="$STATE/containers.conf"
export CONTAINERS_STORAGE_CONF="$STATE/storage.conf"
engine() { podman "$@"; }
# shellcheck source-path=SCRIPTDIR source=lib/images.sh
source "$ROOT/scripts/lib/images.sh"

engine_up() {  # the service answers on its socket
    curl -fsS --max-time 5 --unix-socket "$SOCKET" http://podman/libpod/_ping >/dev/null 2>&1
}

runtime_config() {  # print containers.conf's runtime lines: the shim in a limited sandbox, else runc
    if sandbox_limited; then
        printf 'runtime = "berth-runc"\n\n[engine.runtimes]\nberth-runc = ["%s"]\n' "$STATE/runc-sandbox-shim"
    else
        printf 'runtime = "runc"\n'
    fi
}

write_config() {  # the engine's own containers.conf and storage.conf
    mkdir -p "$STATE" "$STORAGE" "$RUN_DIR"
    if sandbox_limited; then
        install -m 0755 "$ROOT/scripts/images/engine/runc-sandbox-shim" "$STATE/runc-sandbox-shim"
        say "root lacks CAP_SYS_RESOURCE here: the engine's runtime is $STATE/runc-sandbox-shim"
    fi
    local runtime
    runtime="$(runtime_config)"
    cat >"$STATE/storage.conf" <<EOF
# Written by berth's scripts/setup_podman.sh: the test engine's own storage.
[storage]
driver = "overlay"
graphroot = "$STORAGE/storage"
runroot = "$RUN_DIR/storage"
EOF
    cat >"$STATE/containers.conf" <<EOF
# Written by berth's scripts/setup_podman.sh: the test engine, apart from any other Podman here.
[containers]
log_driver = "k8s-file"

[network]
network_config_dir = "$STORAGE/networks"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$RUN_DIR/events.log"
tmp_dir = "$RUN_DIR/libpod"
static_dir = "$STORAGE/storage/libpod"
volume_path = "$STORAGE/storage/volumes"
$runtime
EOF
}

start_service() {
    write_config
    rm -f "$SOCKET"
    start_daemon "podman system service on $SOCKET" "$SERVICE_PID" "$SERVICE_LOG" "$SERVICE_WAIT" engine_up \
        podman system service --time=0 "unix://$SOCKET" || fail "podman system service did not start (see above)"
}

stop_service() {
    stop_daemon "podman system service" "$SERVICE_PID"
    rm -f "$SOCKET"
}

ensure_engine() {
    [[ "$(id -u)" == 0 ]] || skip "the test Podman engine runs as root, and this is not root"
    if ! command -v podman >/dev/null || ! command -v curl >/dev/null; then
        install_packages podman curl || skip "podman could not be installed (see above)"
    fi
    if engine_up; then
        say "the test Podman engine answers already on $SOCKET"
        return 0
    fi
    start_service
}

main() {
    case "${1:-}" in
        --stop) stop_service; return 0 ;;
        --env) printf 'CONTAINERS_CONF=%s\nCONTAINERS_STORAGE_CONF=%s\n' "$CONTAINERS_CONF" "$CONTAINERS_STORAGE_CONF"
            return 0 ;;
    esac
    local started=$SECONDS
    ensure_engine
    build_test_images "$VENV_ARG" || fail "the test images could not be built (see above)"
    say "ready in $((SECONDS - started))s"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then  # sourced by tests/provisioning: functions only
    main "$@"
fi
