#!/usr/bin/env bash
# Provision a Docker engine and the local images berth's container tests need (make docker-engine).
#
# Usage: bash scripts/setup_docker.sh [VENV]     build/refresh; VENV defaults to ./.venv
#        bash scripts/setup_docker.sh --stop      stop the dockerd this script started
#
# 1. Engine. When `docker info` fails: as root, install Debian's docker.io if dockerd is absent,
#    then start dockerd in the background (its own process group, log in $BERTH_DOCKERD_LOG,
#    pid in $BERTH_DOCKERD_PID), waiting at most $BERTH_DOCKERD_WAIT seconds for it. Its
#    configuration ($BERTH_DOCKER_STATE/daemon.json) uses no bridge and no iptables (berth's plans
#    use the host network; no 172.17/16 network is made on a shared machine). In sandboxes whose
#    root lacks CAP_SYS_RESOURCE, the daemon's default runtime is scripts/images/engine/
#    runc-sandbox-shim (see there and docs/containers.md): it raises gpustack-runtime's
#    oom_score_adj of -998 to 0 and drops capabilities the sandbox cannot grant.
# 2. Images, built locally since no registry is reachable (each skipped when current):
#    gpustack/runtime:pause (the pause container every gpustack-runtime workload starts, under
#    the name gpustack-runtime asks for by default), berth-test/busybox:local (stand-in commands),
#    and berth-test/vllm-cpu:local (the host interpreter and VENV at their host paths, so a plan's
#    `vllm serve` runs unchanged; built only when VENV imports vllm).
#
# Not root, no apt-get, or an engine that fails to start: says why and exits 0 (the docker tests
# then skip, or fail under CI=true), except under CI=true where a start failure exits 1.
set -euo pipefail
shopt -s inherit_errexit  # set -e holds inside $(...) too

ROOT="$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_ARG="${1:-$ROOT/.venv}"
STATE="${BERTH_DOCKER_STATE:-/usr/local/lib/berth-docker}"
DOCKERD_LOG="${BERTH_DOCKERD_LOG:-/var/log/berth-dockerd.log}"
DOCKERD_PID="${BERTH_DOCKERD_PID:-/run/berth-dockerd.pid}"
DOCKERD_WAIT="${BERTH_DOCKERD_WAIT:-60}"

PROVISION_NAME=setup_docker
# shellcheck source-path=SCRIPTDIR source=lib/provision.sh
source "$ROOT/scripts/lib/provision.sh"
engine() { docker "$@"; }
# shellcheck source-path=SCRIPTDIR source=lib/images.sh
source "$ROOT/scripts/lib/images.sh"

engine_up() { docker info >/dev/null 2>&1; }

# -- engine ------------------------------------------------------------------------------------

write_daemon_config() {  # the test daemon's configuration, with the shim where it is needed
    mkdir -p "$STATE"
    local runtime=""
    if sandbox_limited; then
        install -m 0755 "$ROOT/scripts/images/engine/runc-sandbox-shim" "$STATE/runc-sandbox-shim"
        runtime="$(printf ', "runtimes": {"berth-runc": {"path": "%s"}}, "default-runtime": "berth-runc"' \
            "$STATE/runc-sandbox-shim")"
        say "root lacks CAP_SYS_RESOURCE here: default runtime is $STATE/runc-sandbox-shim"
    fi
    printf '{"bridge": "none", "iptables": false, "ip6tables": false%s}\n' "$runtime" > "$STATE/daemon.json"
}

start_dockerd() {
    write_daemon_config
    start_daemon dockerd "$DOCKERD_PID" "$DOCKERD_LOG" "$DOCKERD_WAIT" engine_up \
        dockerd --config-file "$STATE/daemon.json" || fail "dockerd did not start (see above)"
}

ensure_engine() {
    if engine_up; then
        say "a Docker engine answers already"
        return 0
    fi
    [[ "$(id -u)" == 0 ]] || skip "no Docker engine answers and this is not root (start Docker, or run as root)"
    if ! command -v dockerd >/dev/null; then
        install_packages docker.io || skip "no dockerd, and docker.io could not be installed (see above)"
    fi
    command -v dockerd >/dev/null || skip "dockerd is still missing after installing docker.io"
    start_dockerd
}

main() {
    if [[ "${1:-}" == "--stop" ]]; then
        stop_daemon dockerd "$DOCKERD_PID"
        return 0
    fi
    local started=$SECONDS
    ensure_engine
    build_test_images "$VENV_ARG" || fail "the test images could not be built (see above)"
    say "ready in $((SECONDS - started))s"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then  # sourced by tests/provisioning: functions only
    main "$@"
fi
