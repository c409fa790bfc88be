"""Guard that every workspace member is installed from this working tree, not from a registry.

Run by `make setup`. A member resolved from a package index (or from another checkout) would make
tests pass against code that is not the code under review.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    members = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["trader-workspace"]
    failures = []
    for member in members["members"]:
        project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
        name = project["name"]
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            failures.append(f"{name}: not installed (expected editable from {member}/)")
            continue
        direct = dist.read_text("direct_url.json")
        url = json.loads(direct).get("url", "") if direct else ""
        if not url.startswith("file://") or Path(url[7:]).resolve() != (ROOT / member).resolve():
            failures.append(f"{name}: installed from {url or 'a package index'}, not {member}/")
    for failure in failures:
        print(f"workspace check: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
