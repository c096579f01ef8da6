"""Code written twice in berth/: pylint's duplicate-code check (R0801), run in-process with the
settings of ``make duplicates`` (pyproject.toml, ``[tool.pylint.similarities]``).

The number of pairs may not grow; lower ``MAX_PAIRS`` as pairs are mended (the goal is 4 at most).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

pytest.importorskip("pylint")

from pylint.lint import Run
from pylint.reporters import CollectingReporter

import berth

REPO = Path(berth.__file__).parent.parent
#: Pairs of modules sharing six or more lines today (imports, docstrings, comments and
#: signatures aside); the one left is utils/__init__.py ~ utils/args.py (their __all__).
MAX_PAIRS = 1


def duplicate_pairs() -> list[tuple[str, str]]:
    """Each pair of modules a duplicate-code message names (a block in n files is n(n-1)/2 pairs)."""
    reporter = CollectingReporter()
    Run(
        [
            f"--rcfile={REPO / 'pyproject.toml'}",
            "--disable=all",
            "--enable=duplicate-code",
            "--score=n",
            str(REPO / "berth"),
        ],
        reporter=reporter,
        exit=False,
    )
    pairs = []
    for message in reporter.messages:
        assert message.symbol == "duplicate-code", message
        places = sorted(line[2:] for line in message.msg.splitlines() if line.startswith("=="))
        pairs += list(itertools.combinations(places, 2))
    return pairs


def test_duplicate_code_does_not_grow() -> None:
    pairs = duplicate_pairs()
    listed = "\n".join(f"{a} ~ {b}" for a, b in pairs)
    assert len(pairs) <= MAX_PAIRS, f"{len(pairs)} duplicate pairs (at most {MAX_PAIRS}):\n{listed}"
