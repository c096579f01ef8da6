"""List the host files a "python + vLLM" test image needs, for ``tar --null -T`` (run it with the venv's python).

The image runs the project's virtualenv at the very path it has on the host, so a plan built
for the host (``vllm serve /abs/model ...``, with the model's directory mounted at the same
path) runs unchanged inside it. Printed, NUL-separated and relative to ``/``:

- every directory, file and link of the virtualenv (``sys.prefix``);
- the interpreter it points to (``sys.base_prefix``): ``bin/python3*``, ``lib/libpython*`` and
  the standard library without its tests, IDLE, tkinter and ``site-packages``;
- host tools vLLM runs in a subprocess (``lscpu``: the CPU backend binds threads from its
  ``--json --extended`` output) and that busybox lacks;
- each system shared library those ELF files load (found with ``ldd``), as the link name the
  loader asks for and the file it resolves to, plus the dynamic loader itself.

``--fingerprint`` prints a hash of what would be listed (paths, sizes, mtimes of the
virtualenv's distributions, berth's own editable install aside, and this recipe) instead, so the
image is rebuilt only when it changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

STDLIB_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}
#: Extension modules left out with their packages (tkinter's pulls in X11 and Tk).
DYNLOAD_SKIP = ("_tkinter",)
ELF_MAGIC = b"\x7fELF"
LDD_BATCH = 64
#: Host programs vLLM calls that busybox does not provide.
HOST_TOOLS = ("lscpu", "bash")  # vLLM's CPU backend calls lscpu; Ray starts workers through bash
#: site-packages entries left out of the fingerprint: berth's own editable install changes with
#: every ``pip install -e .`` and is not what the image is for.
FINGERPRINT_SKIP = ("berth", "__editable__", "_berth")


def walk(root: Path, skip: set[str] = frozenset()) -> Iterator[Path]:  # type: ignore[assignment]
    """``root`` and everything below it (links not followed), minus top-level names in ``skip``."""
    yield root
    for current, dirs, files in os.walk(root):
        if Path(current) == root:
            dirs[:] = [d for d in dirs if d not in skip]
        for name in sorted(dirs) + sorted(files):
            yield Path(current) / name


def interpreter_paths(base: Path) -> Iterator[Path]:
    """The base interpreter: its executables, libpython and the trimmed standard library."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    yield from (p for p in sorted((base / "bin").glob("python3*")))
    yield from sorted((base / "lib").glob("libpython3*"))
    for path in walk(base / "lib" / version, STDLIB_SKIP):
        if not (path.parent.name == "lib-dynload" and path.name.startswith(DYNLOAD_SKIP)):
            yield path


def is_elf(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(4) == ELF_MAGIC


def ldd_libraries(elves: list[Path]) -> set[Path]:
    """Resolved paths of the shared libraries ``elves`` load."""
    found: set[Path] = set()
    for i in range(0, len(elves), LDD_BATCH):
        batch = [str(p) for p in elves[i : i + LDD_BATCH]]
        out = subprocess.run(["ldd", *batch], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) > parts.index("=>") + 1:
                target = parts[parts.index("=>") + 1]
                if target.startswith("/"):
                    found.add(Path(target))
            elif parts and parts[0].startswith("/") and "ld-linux" in parts[0]:
                found.add(Path(parts[0]))
    return found


def library_paths(libraries: Iterable[Path], owned: tuple[Path, ...]) -> set[Path]:
    """System libraries (not under ``owned``) as the loader names them and as the file itself."""
    paths: set[Path] = set()
    for lib in libraries:
        if any(lib.is_relative_to(root) for root in owned):
            continue
        named = Path(os.path.realpath(lib.parent)) / lib.name
        paths.update({named, Path(os.path.realpath(lib))})
    return paths


def tool_paths() -> list[Path]:
    """The host tools of :data:`HOST_TOOLS` that exist, by their real paths."""
    found = (shutil.which(name) for name in HOST_TOOLS)
    return [Path(os.path.realpath(path)) for path in found if path]


def all_paths() -> list[Path]:
    venv, base = Path(sys.prefix), Path(sys.base_prefix)
    own = list(walk(venv)) + list(interpreter_paths(base)) + tool_paths()
    elves = [p for p in own if is_elf(p)] + [Path(os.path.realpath(sys.executable))]
    libs = library_paths(ldd_libraries(elves), (venv, base))
    return sorted(set(own) | libs)


def fingerprint() -> str:
    venv = Path(sys.prefix)
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(f"{venv}\n{sys.base_prefix}\n{sys.version}\n".encode())
    for site in sorted(venv.glob("lib/python3*/site-packages")):
        for entry in sorted(site.iterdir()):
            if entry.name.startswith(FINGERPRINT_SKIP):
                continue
            info = entry.stat()
            digest.update(f"{entry.name} {info.st_size} {int(info.st_mtime)}\n".encode())
    return digest.hexdigest()[:16]


def main() -> None:
    if sys.prefix == sys.base_prefix:
        sys.exit("rootfs_paths.py: run it with a virtualenv's python (sys.prefix == sys.base_prefix)")
    if "--fingerprint" in sys.argv[1:]:
        print(fingerprint())
        return
    out = sys.stdout.buffer
    for path in all_paths():
        out.write(str(path).lstrip("/").encode() + b"\0")


if __name__ == "__main__":
    main()
