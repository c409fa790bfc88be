"""Meta-tests: every hook is documented in the plugin-authoring guide with its exact signature,
has a docstring, and has a test of its own (a test function named ``test_hook_<hook name>``)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from trader import hookspecs

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "plugin-authoring.md"
HOOKS = sorted(name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "trader_spec"))


def signature_line(name: str) -> str:
    signature = str(inspect.signature(getattr(hookspecs, name))).replace("'", "")
    return f"def {name}{signature}:"


def test_there_are_hooks_to_check() -> None:
    assert len(HOOKS) == 8


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_with_its_exact_signature(name: str) -> None:
    guide = GUIDE.read_text()
    assert signature_line(name) in guide, f"{signature_line(name)} is missing from {GUIDE}"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_docstring_saying_when_it_is_called(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert "Called" in doc, f"{name}'s docstring does not say when it is called"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test_of_its_own(name: str) -> None:
    pattern = re.compile(rf"def test_hook_{name}\w*\(")
    test_files = [p for p in ROOT.glob("**/tests/**/test_*.py") if ".venv" not in p.parts]
    assert any(pattern.search(path.read_text()) for path in test_files), (
        f"no test function named test_hook_{name}... exists"
    )
