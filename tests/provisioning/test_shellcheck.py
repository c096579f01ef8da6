"""shellcheck over every shell script of the provisioning (scripts/, .ci/run), warnings included.

shellcheck is Debian's package, installed by ``scripts/setup_tools.sh`` (``make tools``, part of
``make test``'s engines). Without it the test skips, and fails under ``CI=true``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.engines import unavailable

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[2]


def shell_scripts() -> list[Path]:
    """Every file under scripts/ and .ci/ that is bash: a .sh name, a bash shebang or directive."""
    found = []
    for path in sorted([*(ROOT / "scripts").rglob("*"), *(ROOT / ".ci").rglob("*")]):
        if not path.is_file():
            continue
        with open(path, "rb") as handle:
            head = handle.readline()
        if path.suffix == ".sh" or head.startswith(b"#!") and b"bash" in head:
            found.append(path)
    return found


def test_the_scripts_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in shell_scripts()}
    assert {"scripts/setup_docker.sh", "scripts/setup_podman.sh", "scripts/lib/provision.sh",
            "scripts/images/busybox/rootfs.sh", ".ci/run"} <= names


def test_shellcheck_finds_nothing() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        unavailable("shellcheck", "shellcheck is not installed (make tools installs Debian's, as root)")
    scripts = [str(p.relative_to(ROOT)) for p in shell_scripts()]
    done = subprocess.run([shellcheck, "--external-sources", "--shell=bash", "--severity=style", *scripts],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"shellcheck found problems:\n{done.stdout}{done.stderr}"
