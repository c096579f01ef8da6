"""The provisioning helpers, each run with the package it installs made to look absent.

Every helper runs in bash with a PATH that holds only a stand-in directory: the few real tools the
helpers use are linked in, and ``dpkg-query``, ``apt-get``, ``id`` and ``ldd`` are stand-ins.
``dpkg-query`` reports installed only what the test lists; ``apt-get`` records its arguments,
prints apt-like chatter on stdout (which the helper must keep out of the value it returns) and, on
``install``, puts the package's command in place; ``id -u`` answers the uid the test chooses. No
real package is installed and nothing is downloaded.

The checks: the value a helper prints is exactly the value (stdout holds nothing else), a helper
that cannot do its job prints nothing on stdout and returns non-zero (it never ends the script
from inside ``$(...)``), and a script built on them exits as its header says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import alive

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "scripts" / "lib" / "provision.sh"
#: Real tools the helpers (and bash scripts built on them) need, linked into the stand-in PATH.
REAL_TOOLS = ("bash", "awk", "grep", "cat", "dirname", "rm", "mkdir", "chmod", "env")
#: The command each Debian package provides, as the apt-get stand-in installs it.
PACKAGE_COMMANDS = {"busybox-static": "busybox", "shellcheck": "shellcheck", "podman": "podman",
                    "curl": "curl", "docker.io": "dockerd"}

DPKG_QUERY = """#!/bin/bash
# dpkg-query -W -f=FORMAT PACKAGE: installed only when PACKAGE is listed in $STANDIN/installed
pkg="${*: -1}"
if grep -qx -- "$pkg" "$STANDIN/installed" 2>/dev/null; then
    printf 'install ok installed'
    exit 0
fi
echo "dpkg-query: no packages found matching $pkg" >&2
exit 1
"""

APT_GET = """#!/bin/bash
echo "apt-get $*" >> "$STANDIN/apt.log"
echo "Reading package lists... Done"   # apt's chatter goes to stdout, as the real one's does
[[ " $* " == *" update "* ]] && exit 0
[[ -f "$STANDIN/apt-fails" ]] && { echo "E: Unable to locate package" >&2; exit 100; }
for arg in "$@"; do  # the packages: what follows `install`, less options
    [[ "$arg" == install ]] && { installing=1; continue; }
    [[ -n "${installing:-}" && "$arg" != -* ]] || continue
    pkg="$arg"
    echo "Setting up $pkg ..."
    echo "$pkg" >> "$STANDIN/installed"
    cmd="$(grep -m1 "^$pkg=" "$STANDIN/commands" | cut -d= -f2)"
    [[ -n "$cmd" ]] || continue
    printf '#!/bin/bash\\necho "%s stand-in"\\necho "version: 0.9.0"\\n' "$cmd" > "$STANDIN/bin/$cmd"
    chmod +x "$STANDIN/bin/$cmd"
done
"""

ID = """#!/bin/bash
[[ "$1" == -u ]] && { cat "$STANDIN/uid"; exit 0; }
echo "uid=$(cat "$STANDIN/uid")"
"""

LDD = """#!/bin/bash
# a file is "dynamically linked" when it says so
if grep -q DYNAMIC "$1" 2>/dev/null; then echo "libc.so.6 => /lib/libc.so.6"; exit 0; fi
echo "not a dynamic executable" >&2
exit 1
"""


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


class Machine:
    """A stand-in machine: its PATH, its installed packages, its uid, what apt-get was asked."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        for tool in REAL_TOOLS + ("cut",):
            real = shutil.which(tool)
            assert real is not None, f"{tool} is needed to run the provisioning tests"
            (self.bin / tool).symlink_to(real)
        for name, text in (("dpkg-query", DPKG_QUERY), ("apt-get", APT_GET), ("id", ID), ("ldd", LDD)):
            self.write_tool(name, text)
        (root / "commands").write_text("".join(f"{p}={c}\n" for p, c in PACKAGE_COMMANDS.items()))
        (root / "installed").write_text("")
        self.set_uid(0)

    def write_tool(self, name: str, text: str) -> Path:
        path = self.bin / name
        path.write_text(text)
        path.chmod(0o755)
        return path

    def set_uid(self, uid: int) -> None:
        (self.root / "uid").write_text(f"{uid}\n")

    def install(self, package: str, command_text: str) -> Path:
        """Make ``package`` look installed, its command being ``command_text``."""
        with open(self.root / "installed", "a", encoding="utf-8") as listed:
            listed.write(package + "\n")
        return self.write_tool(PACKAGE_COMMANDS[package], command_text)

    def apt_calls(self) -> list[str]:
        log = self.root / "apt.log"
        return log.read_text().splitlines() if log.exists() else []

    def env(self, **extra: str) -> dict[str, str]:
        env = {"PATH": str(self.bin), "STANDIN": str(self.root), "HOME": str(self.root), "LC_ALL": "C"}
        env.update(extra)
        return env

    def bash(self, script: str, **extra: str) -> Result:
        """Run ``script`` under ``set -euo pipefail`` with the helpers sourced."""
        prelude = f"set -euo pipefail\nshopt -s inherit_errexit\nPROVISION_NAME=t\nsource {LIB}\n"
        done = subprocess.run([str(self.bin / "bash"), "-c", prelude + script], env=self.env(**extra),
                              capture_output=True, text=True, timeout=60, check=False)
        return Result(done.returncode, done.stdout, done.stderr)

    def script(self, path: Path, *args: str, **extra: str) -> Result:
        done = subprocess.run([str(self.bin / "bash"), str(path), *args], env=self.env(**extra),
                              capture_output=True, text=True, timeout=60, check=False)
        return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path / "machine")


# -- install_packages ----------------------------------------------------------------------------


def test_install_packages_installs_only_the_missing_ones_and_prints_nothing(machine: Machine) -> None:
    machine.install("curl", "#!/bin/bash\n")
    got = machine.bash("install_packages curl podman")
    assert got.code == 0, got.stderr
    assert got.stdout == "", "apt-get's output must go to stderr"
    assert "Reading package lists" in got.stderr
    installs = [call for call in machine.apt_calls() if " install " in f" {call} "]
    assert len(installs) == 1 and installs[0].endswith(" podman"), machine.apt_calls()
    assert "--no-install-recommends" in installs[0] and "DPkg::Lock::Timeout=300" in installs[0]


def test_install_packages_does_nothing_when_everything_is_installed(machine: Machine) -> None:
    machine.install("podman", "#!/bin/bash\n")
    got = machine.bash("install_packages podman")
    assert (got.code, got.stdout, machine.apt_calls()) == (0, "", [])


def test_install_packages_as_non_root_says_why_and_returns_nonzero(machine: Machine) -> None:
    machine.set_uid(1000)
    got = machine.bash("install_packages podman || echo returned=$?")
    assert got.stdout == "returned=1\n"
    assert "not root" in got.stderr and "apt-get install podman" in got.stderr
    assert machine.apt_calls() == []


def test_install_packages_reports_a_failed_apt_get(machine: Machine) -> None:
    (machine.root / "apt-fails").write_text("")
    got = machine.bash("install_packages podman || echo returned=$?")
    assert got.stdout == "returned=1\n"
    assert "apt-get install podman failed" in got.stderr


# -- busybox_binary --------------------------------------------------------------------------------


def test_busybox_binary_installs_busybox_static_and_prints_only_its_path(machine: Machine) -> None:
    got = machine.bash('bin="$(busybox_binary)"; printf "%s" "$bin"')
    assert got.code == 0, got.stderr
    assert got.stdout == str(machine.bin / "busybox")
    assert "installing busybox-static" in got.stderr
    assert any(call.endswith(" busybox-static") for call in machine.apt_calls())


def test_busybox_binary_replaces_a_dynamic_busybox(machine: Machine) -> None:
    machine.write_tool("busybox", "#!/bin/bash\n# DYNAMIC\n")  # Debian's `busybox`, not -static
    got = machine.bash("busybox_binary")
    # the stand-in apt-get writes a static one over it, as busybox-static replaces busybox
    assert (got.code, got.stdout) == (0, f"{machine.bin / 'busybox'}\n"), got.stderr
    assert any(call.endswith(" busybox-static") for call in machine.apt_calls())


def test_busybox_binary_uses_a_static_busybox_already_there(machine: Machine) -> None:
    machine.install("busybox-static", "#!/bin/bash\n")
    got = machine.bash("busybox_binary")
    assert (got.code, got.stdout, machine.apt_calls()) == (0, f"{machine.bin / 'busybox'}\n", [])


def test_busybox_binary_that_cannot_install_returns_nonzero_with_an_empty_value(machine: Machine) -> None:
    machine.set_uid(1000)
    got = machine.bash('bin="$(busybox_binary)" || echo "returned=$? value=[$bin]"')
    assert got.stdout == "returned=1 value=[]\n"
    assert "busybox-static missing and this is not root" in got.stderr


# -- tool_path and setup_tools.sh ------------------------------------------------------------------


def test_tool_path_installs_the_package_and_prints_only_the_path(machine: Machine) -> None:
    got = machine.bash("tool_path shellcheck shellcheck")
    assert (got.code, got.stdout) == (0, f"{machine.bin / 'shellcheck'}\n"), got.stderr
    assert any(call.endswith(" shellcheck") for call in machine.apt_calls())


def test_tool_path_says_when_the_package_brings_no_such_command(machine: Machine) -> None:
    got = machine.bash("tool_path no-such-tool curl || echo returned=$?")
    assert got.stdout == "returned=1\n"
    assert "no-such-tool is still missing after installing curl" in got.stderr


def test_setup_tools_prints_only_shellchecks_path(machine: Machine) -> None:
    got = machine.script(ROOT / "scripts" / "setup_tools.sh")
    assert (got.code, got.stdout) == (0, f"{machine.bin / 'shellcheck'}\n"), got.stderr
    assert "setup_tools: shellcheck:" in got.stderr


@pytest.mark.parametrize(("ci", "code"), [("", 0), ("true", 1)])
def test_setup_tools_without_root_exits_as_documented(machine: Machine, ci: str, code: int) -> None:
    machine.set_uid(1000)
    got = machine.script(ROOT / "scripts" / "setup_tools.sh", CI=ci)
    assert (got.code, got.stdout) == (code, "")
    assert "shellcheck missing and this is not root" in got.stderr


# -- the engines' configuration ----------------------------------------------------------------------


def test_setup_podman_writes_a_confined_configuration(machine: Machine, tmp_path: Path) -> None:
    """containers.conf and storage.conf parse, and every path in them is the test engine's own."""
    import tomllib

    dirs = {"BERTH_PODMAN_STATE": tmp_path / "state", "BERTH_PODMAN_STORAGE": tmp_path / "storage",
            "BERTH_PODMAN_RUN": tmp_path / "run"}
    for tool in ("install", "printf"):
        if shutil.which(tool) and not (machine.bin / tool).exists():
            (machine.bin / tool).symlink_to(shutil.which(tool))  # type: ignore[arg-type]
    got = machine.bash(f"source {ROOT / 'scripts' / 'setup_podman.sh'}; write_config",
                       **{k: str(v) for k, v in dirs.items()})
    assert (got.code, got.stdout) == (0, ""), got.stderr
    containers = tomllib.loads((dirs["BERTH_PODMAN_STATE"] / "containers.conf").read_text())
    storage = tomllib.loads((dirs["BERTH_PODMAN_STATE"] / "storage.conf").read_text())
    engine = containers["engine"]
    paths = [storage["storage"]["graphroot"], storage["storage"]["runroot"],
             containers["network"]["network_config_dir"], engine["events_logfile_path"], engine["tmp_dir"],
             engine["static_dir"], engine["volume_path"], *engine.get("runtimes", {}).get("berth-runc", [])]
    roots = tuple(str(d) + os.sep for d in dirs.values())
    assert all(p.startswith(roots) for p in paths), paths
    assert engine["cgroup_manager"] == "cgroupfs" and engine["events_logger"] == "file"
    if engine["runtime"] == "berth-runc":  # a sandbox without CAP_SYS_RESOURCE, as this project's
        shim = Path(engine["runtimes"]["berth-runc"][0])
        assert os.access(shim, os.X_OK), "the runtime shim is not installed where the config says"
    else:
        assert engine["runtime"] == "runc"


# -- start_daemon and stop_daemon ----------------------------------------------------------------------

#: A stand-in daemon: it says it started, makes the file READY says it answers by, then serves.
DAEMON = """#!/bin/bash
echo "daemon: up"
: > "$STANDIN/answers"
exec sleep 300
"""


@pytest.fixture
def daemon_machine(machine: Machine) -> Machine:
    for tool in ("setsid", "sleep", "seq", "tail"):
        (machine.bin / tool).symlink_to(shutil.which(tool))  # type: ignore[arg-type]
    machine.write_tool("daemon", DAEMON)
    return machine


def _daemon_script(machine: Machine, command: str) -> str:
    root = machine.root
    return (f'answers() {{ [[ -f "$STANDIN/answers" ]]; }}\n'
            f'start_daemon "the daemon" {root}/d.pid {root}/d.log 10 answers {command} || echo returned=$?\n')


def test_start_daemon_waits_until_it_answers_and_stop_daemon_stops_its_group(daemon_machine: Machine) -> None:
    machine = daemon_machine
    started = machine.bash(_daemon_script(machine, "daemon"))
    pid = int((machine.root / "d.pid").read_text())
    try:
        assert (started.code, started.stdout) == (0, ""), started.stderr
        assert "starting the daemon (log:" in started.stderr and "the daemon ready after about" in started.stderr
        assert f"(pid {pid})" in started.stderr
        assert alive(pid) and os.getpgid(pid) == pid, "the daemon leads a process group of its own"
        assert os.readlink(f"/proc/{pid}/cwd") == "/", "a daemon runs from /, not from a folder that may go"
        assert (machine.root / "d.log").read_text() == "daemon: up\n"
    finally:
        stopped = machine.bash(f'stop_daemon "the daemon" {machine.root}/d.pid')
    assert (stopped.code, stopped.stdout) == (0, ""), stopped.stderr
    assert f"stopping the daemon (process group {pid})" in stopped.stderr
    assert not alive(pid) and not (machine.root / "d.pid").exists()
    again = machine.bash(f'stop_daemon "the daemon" {machine.root}/d.pid')
    assert (again.code, again.stdout) == (0, "") and "nothing of ours to stop" in again.stderr


def test_start_daemon_that_exits_returns_nonzero_with_its_log(daemon_machine: Machine) -> None:
    machine = daemon_machine
    machine.write_tool("crashing", '#!/bin/bash\necho "crashing: bad config" >&2\nexit 3\n')
    got = machine.bash(_daemon_script(machine, "crashing"))
    assert (got.code, got.stdout) == (0, "returned=1\n")
    assert "crashing: bad config" in got.stderr and "the daemon exited before it answered" in got.stderr


def test_start_daemon_that_never_answers_gives_up_after_its_wait(daemon_machine: Machine) -> None:
    machine = daemon_machine
    machine.write_tool("mute", "#!/bin/bash\nexec sleep 300\n")
    script = _daemon_script(machine, "mute").replace(" 10 answers ", " 1 answers ")
    got = machine.bash(script + f'stop_daemon "the daemon" {machine.root}/d.pid\n')
    assert (got.code, got.stdout) == (0, "returned=1\n")
    assert "the daemon did not answer within 1s" in got.stderr and "stopping the daemon" in got.stderr
