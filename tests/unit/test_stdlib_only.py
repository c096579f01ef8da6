"""The deployers' by-path programs and what they import use the standard library only.

Each module is imported in a fresh interpreter exactly as the programs run
(``python -I -P berth/deployers/_stdlib/run.py MODULE``: berth's parent packages registered
bare); afterwards every module loaded must come from the standard library or be one of these.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess  # each case starts a fresh interpreter

import berth.deployers._stdlib as stdlib_pkg

STDLIB_DIR = Path(stdlib_pkg.__file__).parent
RUN = STDLIB_DIR / "run.py"
#: The by-path programs, the deployer-local modules they import, and every module of _stdlib.
STDLIB_ONLY = sorted(
    {
        "berth.deployers.process.shim",
        "berth.deployers.process._state",
        "berth.deployers.launcher.daemon",
        "berth.deployers.launcher._child",
        "berth.deployers.launcher._protocol",
        "berth.deployers.launcher._records",
        "berth.deployers.launcher._vllm",
    }
    | {f"berth.deployers._stdlib.{p.stem}" for p in STDLIB_DIR.glob("*.py") if p.stem != "__init__"}
    | {"berth.deployers._stdlib"}
)
_PROBE = """
import importlib, importlib.util, json, sys
before = set(sys.modules)  # what the interpreter itself loaded (site, .pth hooks)
spec = importlib.util.spec_from_file_location("_berth_run", sys.argv[1])
run = importlib.util.module_from_spec(spec); spec.loader.exec_module(run)
run.register_parents(sys.argv[2])
importlib.import_module(sys.argv[2])
print(json.dumps({n: getattr(m, "__file__", None) for n, m in list(sys.modules.items()) if n not in before}))
"""


def _loaded(module: str) -> dict[str, str | None]:
    done = subprocess.run([sys.executable, "-I", "-P", "-c", _PROBE, str(RUN), module],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("module", STDLIB_ONLY)
def test_imports_nothing_but_the_standard_library(module: str) -> None:
    stdlib = {Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib")}
    loaded = _loaded(module)
    foreign = []
    for name, file in loaded.items():
        if name in STDLIB_ONLY or name == "_berth_run" or file is None:
            continue
        path = Path(file).resolve()
        if not any(path.is_relative_to(root) for root in stdlib) or "site-packages" in path.parts:
            foreign.append(name)
    assert foreign == [], f"{module} pulls in {foreign}"
    assert not [n for n in loaded if n.startswith(("gpustack_runtime", "pydantic", "vllm"))]
    assert not [n for n in loaded if n.startswith("berth.") and n not in STDLIB_ONLY
                and loaded[n] is not None]  # only the bare parent packages besides these
