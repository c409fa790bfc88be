"""Regenerate the task machine diagrams in docs/tasks.md from the declarations in the code.

    python tools/generate_task_diagrams.py           # rewrite the blocks in place
    python tools/generate_task_diagrams.py --check   # exit 1 if the document is out of date

Each declared task type has a block between ``<!-- diagram:TYPE -->`` and
``<!-- /diagram:TYPE -->``; everything else in the document is left as it is. A test runs the
same check, so the document cannot drift from the code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trader.errors import TraderError
from trader.tasks.definitions import TASK_DEFINITIONS
from trader.tasks.diagram import update_doc_blocks

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "tasks.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; change nothing")
    parser.add_argument("--document", type=Path, default=DOCUMENT, help="the Markdown file")
    args = parser.parse_args(argv)
    text = args.document.read_text(encoding="utf-8")
    try:
        updated = update_doc_blocks(text, TASK_DEFINITIONS.values())
    except TraderError as error:
        print(f"{args.document}: {error}", file=sys.stderr)
        return 1
    if updated == text:
        return 0
    if args.check:
        print(
            f"{args.document} is out of date: run python tools/generate_task_diagrams.py",
            file=sys.stderr,
        )
        return 1
    args.document.write_text(updated, encoding="utf-8")
    print(f"updated {args.document}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
