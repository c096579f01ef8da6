#!/usr/bin/env bash
# Install Ray 2.60.0 into a virtualenv, with what `ray start --head --dashboard-port=...` needs
# (the `default` extra: dashboard, dashboard agent, metrics exporter), so that `VENV/bin/ray`
# and `import ray` work for the multi-node tests (pytest -m ray).
#
# Usage: bash scripts/setup_ray.sh VENV        (idempotent; a second run only checks)
#
# It never runs `ray start` or `ray stop` (`ray stop` kills every Ray process on the machine).
set -euo pipefail
shopt -s inherit_errexit  # set -e holds inside $(...) too

VENV="${1:?usage: setup_ray.sh VENV}"
PY="$VENV/bin/python"
RAY_VERSION="2.60.0"
# modules that `ray start --head` with a dashboard imports, beyond ray itself
DASHBOARD_MODULES=(aiohttp aiohttp_cors grpc opencensus prometheus_client colorful smart_open)

if [[ ! -x "$PY" ]]; then
    echo "setup_ray: $PY not found; create the virtualenv first (make venv)" >&2
    exit 2
fi

installed() {  # succeed when ray == RAY_VERSION and every dashboard module imports
    "$PY" - "$RAY_VERSION" "${DASHBOARD_MODULES[@]}" <<'EOF'
import importlib, importlib.metadata as md, sys
want, modules = sys.argv[1], sys.argv[2:]
try:
    if md.version("ray") != want:
        sys.exit(1)
    for name in modules:
        importlib.import_module(name)
except Exception:
    sys.exit(1)
EOF
}

if installed; then
    echo "setup_ray: ray[default]==$RAY_VERSION already installed" >&2
else
    echo "setup_ray: installing ray[default]==$RAY_VERSION (about a minute)" >&2
    "$PY" -m pip install -q "ray[default]==$RAY_VERSION"
    installed || { echo "setup_ray: ray or its dashboard modules still do not import" >&2; exit 1; }
fi

if [[ ! -x "$VENV/bin/ray" ]]; then
    echo "setup_ray: $VENV/bin/ray is missing after the install" >&2
    exit 1
fi
"$VENV/bin/ray" --version
