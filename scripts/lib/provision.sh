# shellcheck shell=bash
# Helpers shared by the scripts/setup_*.sh provisioning scripts. Source it after setting
# PROVISION_NAME (the prefix of every log line).
#
# Two rules keep a value captured with $(...) only the value:
#   - logs, and the output of the tools run (apt-get, dpkg), go to stderr; stdout carries values;
#   - no function here ends the script: one that cannot do its job says why on stderr and returns
#     non-zero, and the caller decides (`x="$(busybox_binary)" || skip "..."`). An `exit` inside a
#     function run in $(...) would only end that subshell, and the script would go on with an
#     empty value. `skip` and `fail` end the script, so they belong at the top level of a script,
#     never inside a function whose output is captured.

PROVISION_NAME="${PROVISION_NAME:-provision}"

say() { echo "$PROVISION_NAME: $*" >&2; }

in_ci() { [[ "${CI:-}" =~ ^(1|true|yes|TRUE|True)$ ]]; }

skip() {  # end the script with success: what needs this engine or tool skips (fails under CI)
    say "skipping: $*"
    exit 0
}

fail() {  # end the script: with 1 under CI=true, else with 0 (the tests that need it then skip)
    say "error: $*"
    if in_ci; then exit 1; fi
    exit 0
}

package_installed() {  # exit 0 when Debian package $1 is installed
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

install_packages() {  # install the Debian packages "$@" that are not installed yet (no recommends)
    local missing=() pkg
    for pkg in "$@"; do
        package_installed "$pkg" || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    if [[ "$(id -u)" != 0 ]]; then
        say "${missing[*]} missing and this is not root; install them by hand (apt-get install ${missing[*]})"
        return 1
    fi
    if ! command -v apt-get >/dev/null; then
        say "apt-get not found; install ${missing[*]} by hand"
        return 1
    fi
    say "installing ${missing[*]} from Debian (apt-get)"
    local wait=(-o DPkg::Lock::Timeout=300)  # another install on the machine holds the lock: wait for it
    if ! apt-get "${wait[@]}" update -qq >&2 ||
        ! DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -qq --no-install-recommends \
            "${missing[@]}" >&2; then
        say "apt-get install ${missing[*]} failed (see above)"
        return 1
    fi
}

sandbox_limited() {  # exit 0 when root here cannot take CAP_SYS_RESOURCE (bit 24 of CapBnd)
    local bounding
    bounding="$(awk '/^CapBnd:/ {print $2}' /proc/self/status)"
    (((0x$bounding >> 24 & 1) == 0))
}

tool_path() {  # print the path of command $1, installing Debian package $2 when it is missing
    local bin
    bin="$(command -v "$1" || true)"
    if [[ -z "$bin" ]]; then
        install_packages "$2" || return 1
        bin="$(command -v "$1" || true)"
    fi
    if [[ -z "$bin" ]]; then
        say "$1 is still missing after installing $2"
        return 1
    fi
    echo "$bin"
}

busybox_binary() {  # print the path of a statically linked busybox, installing busybox-static if needed
    local bin
    bin="$(command -v busybox || true)"
    if [[ -z "$bin" ]] || ldd "$bin" >/dev/null 2>&1; then
        install_packages busybox-static || return 1
        bin="$(command -v busybox || true)"
    fi
    if [[ -z "$bin" ]] || ldd "$bin" >/dev/null 2>&1; then
        say "no static busybox after installing busybox-static (found: ${bin:-none})"
        return 1
    fi
    echo "$bin"
}
