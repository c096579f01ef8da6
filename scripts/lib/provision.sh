# shellcheck shell=bash
# Helpers shared by the provisioning scripts (scripts/setup_*.sh, scripts/build_image_test.sh):
# logging, ending a script, Debian packages, and the daemons they start. Source it after setting
# PROVISION_NAME (the prefix of every log line).
#
# Two rules keep a value captured with $(...) only the value:
#   - logs, and the output of the tools run (apt-get, dpkg), go to stderr; stdout carries values;
#   - no function here ends the script: one that cannot do its job says why on stderr and returns
#     non-zero, and the caller decides (`x="$(busybox_binary)" || skip "..."`). An `exit` inside a
#     function run in $(...) would only end that subshell, and the script would go on with an
#     empty value. `skip`, `fail` and `die` end the script, so they belong at the top level of a
#     script, never inside a function whose output is captured.

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

die() {  # end the script with 1, CI or not: for a script whose caller acts on its exit status
    say "error: $*"
    exit 1
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

# -- daemons -----------------------------------------------------------------------------------
# A daemon these scripts start runs in a session of its own (so its whole process group can be
# stopped), its output appended to a log file and its pid kept in a pid file, which `--stop` reads.

start_daemon() {  # start_daemon NAME PID_FILE LOG WAIT_S READY COMMAND...: start COMMAND in the
    # background and wait at most WAIT_S seconds until the command READY succeeds; returns
    # non-zero, after showing the log's last lines, when the daemon exits or does not answer.
    local name="$1" pid_file="$2" log="$3" wait_s="$4" ready="$5" pid waited=0 problem
    shift 5
    say "starting $name (log: $log)"
    # from /, as daemons run: one started from a folder later removed (a worktree, a build
    # directory) fails its children's getcwd (conmon: "Failed to get working directory")
    (cd / && exec setsid "$@") >>"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pid_file"
    until "$ready"; do
        problem=""
        if ! kill -0 "$pid" 2>/dev/null; then
            problem="exited before it answered"
        elif ((waited >= wait_s * 2)); then
            problem="did not answer within ${wait_s}s"
        fi
        if [[ -n "$problem" ]]; then
            tail -n 20 "$log" >&2 || true
            say "$name $problem (see $log)"
            return 1
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    say "$name ready after about $((waited / 2))s (pid $pid)"
}

stop_daemon() {  # stop_daemon NAME PID_FILE: stop the process group start_daemon started (SIGTERM,
    # then wait up to 20 s for it) and remove PID_FILE; nothing to do without PID_FILE
    local name="$1" pid_file="$2" pid
    [[ -f "$pid_file" ]] || { say "no $pid_file: nothing of ours to stop"; return 0; }
    pid="$(cat "$pid_file")"
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping $name (process group $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$pid_file"
}
