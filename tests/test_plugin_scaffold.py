"""`trader plugin new` end to end: generated plugins install, are discovered and pass their suites.

Each test builds a scratch virtualenv beside the workspace's: a ``.pth`` file makes the workspace
site-packages (trader, trader-sdk, their dependencies, pip and hatchling) importable there, so
nothing is downloaded, and the generated plugin is installed into the scratch environment only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300
#: Conformance checks of optional capabilities the templates do not offer (they skip).
OPTIONAL_CHECKS = {
    "test_cs15_resample_matches_reference",
    "test_cs22_resample_bounds_cover_whole_candles",
}


def run(
    *command: str | Path, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; on an unexpected failure show its output."""
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, command))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def require_hatchling() -> None:
    """Fail (not skip) without hatchling: these tests are the acceptance of `plugin new`."""
    if importlib.util.find_spec("hatchling") is None:
        pytest.fail("hatchling is not installed: run `make setup` (requirements/dev.txt has it)")


class ScratchEnv:
    """A virtualenv in which the workspace's packages are importable and new plugins install."""

    def __init__(self, path: Path) -> None:
        require_hatchling()
        run(sys.executable, "-m", "venv", "--without-pip", path)
        self.python = path / "bin" / "python"
        purelib = run(
            self.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"
        ).stdout.strip()
        workspace = sysconfig.get_path("purelib")
        # addsitedir (unlike a bare path line) also processes the workspace's editable .pth files.
        Path(purelib, "_trader_workspace.pth").write_text(
            f"import site; site.addsitedir({workspace!r})\n", encoding="utf-8"
        )

    def trader(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(self.python, "-m", "trader", *arguments, check=check)

    def new_plugin(self, kind: str, name: str, directory: Path) -> Path:
        result = self.trader("plugin", "new", kind, name, "--directory", str(directory))
        folder = directory / f"trader-{kind}-{name.replace('_', '-')}"
        assert str(folder) in result.stdout
        assert (folder / "pyproject.toml").is_file()
        return folder

    def install(self, folder: Path) -> None:
        run(
            self.python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            folder,
        )

    def plugins(self) -> dict[str, dict[str, Any]]:
        result = self.trader("plugins", "--json")
        assert "Traceback" not in result.stderr
        return {entry["name"]: entry for entry in json.loads(result.stdout)}

    def run_tests(self, folder: Path, report: Path) -> ElementTree.Element:
        """Run the plugin's own tests from its folder; return the junit report's test suite."""
        run(
            self.python,
            "-m",
            "pytest",
            folder / "tests",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={report}",
            cwd=folder,
        )
        suite = ElementTree.parse(report).getroot().find("testsuite")  # noqa: S314 - our own report
        assert suite is not None
        return suite


@pytest.fixture
def scratch(tmp_path: Path) -> ScratchEnv:
    return ScratchEnv(tmp_path / "venv")


@pytest.mark.parametrize(
    ("kind", "name", "registers"),
    [
        ("storage", "json_files", {"candle_store": ["json_files"]}),
        ("scheduler", "every_few", {"scheduler": ["every_few"]}),
    ],
)
def test_generated_plugin_installs_is_discovered_and_passes_its_conformance_suite(
    scratch: ScratchEnv, tmp_path: Path, kind: str, name: str, registers: dict[str, list[str]]
) -> None:
    folder = scratch.new_plugin(kind, name, tmp_path / "src")
    scratch.install(folder)

    plugin = scratch.plugins()[f"{kind}_{name}"]
    assert plugin["distribution"] == f"trader-{kind}-{name.replace('_', '-')}"
    assert plugin["version"] == "0.1.0"
    assert plugin["registers"] == registers
    assert plugin["problems"] == []

    suite = scratch.run_tests(folder, tmp_path / "report.xml")
    cases = list(suite.iter("testcase"))
    assert len(cases) == int(suite.get("tests", -1)) > 0
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0")
    conformance = [
        case.get("name", "") for case in cases if "Conformance" in case.get("classname", "")
    ]
    assert len(conformance) >= 7, f"the conformance suite did not run: {conformance}"
    skipped = [case.get("name") for case in cases if case.find("skipped") is not None]
    assert set(skipped) <= OPTIONAL_CHECKS, f"skipped: {skipped}"


def test_plugin_that_raises_on_import_is_reported_by_name_and_the_cli_keeps_working(
    scratch: ScratchEnv, tmp_path: Path
) -> None:
    healthy = scratch.new_plugin("storage", "healthy", tmp_path / "src")
    broken = scratch.new_plugin("scheduler", "broken", tmp_path / "src")
    plugin_module = broken / "src" / "trader_scheduler_broken" / "plugin.py"
    plugin_module.write_text(
        plugin_module.read_text(encoding="utf-8") + '\nraise RuntimeError("boom")\n',
        encoding="utf-8",
    )
    scratch.install(healthy)
    scratch.install(broken)

    plugins = scratch.plugins()
    assert plugins["storage_healthy"]["problems"] == []
    assert plugins["storage_healthy"]["registers"] == {"candle_store": ["healthy"]}
    reported = plugins["scheduler_broken"]
    assert reported["distribution"] == "trader-scheduler-broken"
    assert reported["registers"] == {}
    assert len(reported["problems"]) == 1
    assert "boom" in reported["problems"][0]
    assert "sqlite" in plugins, "the default plugins stopped loading"

    version = scratch.trader("--version")
    assert "trader" in version.stdout
    table = scratch.trader("plugins")
    assert "Traceback" not in table.stdout + table.stderr


def test_templates_ship_inside_the_trader_sdk_wheel(tmp_path: Path) -> None:
    require_hatchling()
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--wheel-dir",
        tmp_path,
        ROOT / "sdk",
    )
    (wheel,) = tmp_path.glob("trader_sdk-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    template_root = ROOT / "sdk" / "src" / "trader_sdk" / "templates"
    expected = {
        "trader_sdk/" + path.relative_to(template_root.parent).as_posix()
        for path in template_root.rglob("*.tmpl")
    }
    assert expected, "no templates found in the working tree"
    assert expected <= names
    assert "trader_sdk/scaffold.py" in names
