#!/usr/bin/env bash
# Provision what the GPUStack end-to-end tests (pytest -m gpustack, tests/gpustack/) need:
#   1. PostgreSQL 15 server binaries (Debian's postgresql-15; GPUStack 2.3 accepts only
#      postgresql:// or mysql:// database URLs). Installed with apt-get when missing (root only).
#      Nothing is started here: each test run initdb's its own cluster on a free port and stops it.
#   2. GPUStack 2.3.0 in a virtualenv of its own (never berth's: their dependency pins differ).
#
# Usage: bash scripts/setup_gpustack.sh GPUSTACK_VENV     (idempotent; seconds when already done)
#
# Logs go to stderr. Stdout carries only the values the tests read, one KEY=VALUE a line:
#   BERTH_GPUSTACK_BIN=<venv>/bin/gpustack
#   BERTH_PG_BIN=<directory of initdb, pg_ctl, createdb>
set -euo pipefail

VENV="${1:?usage: setup_gpustack.sh GPUSTACK_VENV}"
GPUSTACK_VERSION="2.3.0"
PG_MAJOR="15"
PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"

log() { echo "setup_gpustack: $*" >&2; }

ensure_postgres() {
    if [[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" && -x "$PG_BIN/createdb" ]]; then
        log "PostgreSQL $PG_MAJOR already installed ($PG_BIN)"
        return
    fi
    if [[ "$(id -u)" != "0" ]]; then
        log "PostgreSQL $PG_MAJOR is missing and only root can install it: apt-get install postgresql-$PG_MAJOR"
        exit 2
    fi
    log "installing postgresql-$PG_MAJOR (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-$PG_MAJOR" >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-$PG_MAJOR" >&2; }
    # The package's own cluster is not used (tests make theirs); keep it from running.
    if command -v pg_ctlcluster >/dev/null && pg_ctlcluster "$PG_MAJOR" main status >/dev/null 2>&1; then
        pg_ctlcluster "$PG_MAJOR" main stop >&2 || true
    fi
    [[ -x "$PG_BIN/initdb" ]] || { log "postgresql-$PG_MAJOR installed but $PG_BIN/initdb is missing"; exit 1; }
}

gpustack_version() {  # the installed gpustack version in $VENV, or nothing
    [[ -x "$VENV/bin/python" ]] || return 0
    "$VENV/bin/python" - <<'EOF' 2>/dev/null || true
import importlib.metadata as md
print(md.version("gpustack"))
EOF
}

ensure_gpustack() {
    if [[ "$(gpustack_version)" == "$GPUSTACK_VERSION" && -x "$VENV/bin/gpustack" ]]; then
        log "gpustack $GPUSTACK_VERSION already installed in $VENV"
        return
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating $VENV"
        python3 -m venv "$VENV"
    fi
    log "installing gpustack==$GPUSTACK_VERSION into $VENV (a few minutes)"
    "$VENV/bin/python" -m pip install -q "gpustack==$GPUSTACK_VERSION" >&2
    [[ "$(gpustack_version)" == "$GPUSTACK_VERSION" ]] || { log "gpustack $GPUSTACK_VERSION does not import after the install"; exit 1; }
}

ensure_postgres
ensure_gpustack
echo "BERTH_GPUSTACK_BIN=$(cd "$VENV" && pwd)/bin/gpustack"
echo "BERTH_PG_BIN=$PG_BIN"
