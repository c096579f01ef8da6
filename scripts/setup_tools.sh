#!/usr/bin/env bash
# Install the tools the test suite runs besides Python: Debian's shellcheck (tests/provisioning
# checks every script under scripts/ with it).
#
# Usage: bash scripts/setup_tools.sh        (idempotent; prints shellcheck's path on stdout)
#
# Not root or no apt-get: says why and exits 0 (the shellcheck test then skips, or fails under CI=true).
set -euo pipefail
shopt -s inherit_errexit  # set -e holds inside $(...) too

ROOT="$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
PROVISION_NAME=setup_tools
# shellcheck source-path=SCRIPTDIR source=lib/provision.sh
source "$ROOT/scripts/lib/provision.sh"

bin="$(tool_path shellcheck shellcheck)" || fail "shellcheck is not installed and could not be (see above)"
say "shellcheck: $bin ($("$bin" --version | awk '/^version:/ {print $2}'))"
echo "$bin"
