"""The fast vLLM stand-in (``tests/support/fake_vllm.py``) plus what fault tests need:
``--ignore-term`` makes it ignore SIGTERM, so a stop waits its whole grace period and then kills
(the window in which a worker can be killed mid-stop).

    python tests/hardening/_stand_in.py MODEL --host H --port P [--ignore-term] [fake_vllm options]
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path

FAKE = Path(__file__).resolve().parents[1] / "support" / "fake_vllm.py"


def main(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("fake_vllm", FAKE)
    assert spec is not None and spec.loader is not None
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    if "--ignore-term" not in argv:
        return int(fake.main(argv))
    argv = [arg for arg in argv if arg != "--ignore-term"]
    real_signal = signal.signal

    def keep_ignoring(signum: int, handler: object) -> object:  # fake_vllm installs its own SIGTERM handler
        return real_signal(signum, signal.SIG_IGN if signum == signal.SIGTERM else handler)  # type: ignore[arg-type]

    signal.signal = keep_ignoring  # type: ignore[assignment]
    real_signal(signal.SIGTERM, signal.SIG_IGN)
    return int(fake.main(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
