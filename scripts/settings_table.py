"""Print the worker's settings as a markdown table, generated from ``berth.worker.settings.Settings``.

Usage (with the virtualenv's python, from the repository root):
    python scripts/settings_table.py                 print the table
    python scripts/settings_table.py --write FILE    replace the table between FILE's markers
    python scripts/settings_table.py --check FILE    exit 1 when FILE's table is out of date

FILE (docs/configuration.md) holds the table between the lines ``<!-- settings-table:begin -->``
and ``<!-- settings-table:end -->``, so the documentation is regenerated, never hand-copied.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"


def table() -> str:
    from berth.worker.settings import settings_table

    return settings_table()


def with_table(text: str, rendered: str, source: Path) -> str:
    """``text`` with the region between the markers replaced by ``rendered``."""
    head, sep, rest = text.partition(BEGIN)
    if not sep or END not in rest:
        raise SystemExit(f"{source}: add the lines {BEGIN} and {END} where the table goes")
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{rendered}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", type=Path, metavar="FILE", help="regenerate FILE's table in place")
    action.add_argument("--check", type=Path, metavar="FILE", help="fail when FILE's table is out of date")
    args = parser.parse_args(argv)
    rendered = table()
    target = args.write or args.check
    if target is None:
        print(rendered)
        return 0
    current = target.read_text(encoding="utf-8")
    updated = with_table(current, rendered, target)
    if args.check:
        if updated != current:
            print(f"{target}: the settings table is out of date; run: python scripts/settings_table.py "
                  f"--write {target}", file=sys.stderr)
            return 1
        return 0
    target.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
