"""Rendering of plugin templates (`trader plugin new`): files, names, errors, and the command."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from trader.cli.main import main
from trader.interfaces import CandleStore, PluginContext, Schedule
from trader.model import Candle, SeriesKey, Timeframe
from trader_sdk.scaffold import (
    KINDS,
    ScaffoldError,
    plugin_names,
    render_files,
    render_plugin,
    supported_kinds,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def rendered_files(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_supported_kinds_are_the_ones_with_a_conformance_suite() -> None:
    assert supported_kinds() == ["scheduler", "storage"]
    assert set(KINDS) == {"storage", "scheduler", "exchange", "strategy"}


@pytest.mark.parametrize("kind", ["storage", "scheduler"])
def test_render_creates_a_complete_distribution_folder(tmp_path: Path, kind: str) -> None:
    folder = render_plugin(kind, "my_thing", tmp_path)

    assert folder == tmp_path / f"trader-{kind}-my-thing"
    package = f"src/trader_{kind}_my_thing"
    module = {"storage": "store.py", "scheduler": "schedule.py"}[kind]
    assert set(rendered_files(folder)) == {
        "pyproject.toml",
        "README.md",
        f"{package}/__init__.py",
        f"{package}/plugin.py",
        f"{package}/py.typed",
        f"{package}/{module}",
        f"tests/test_{kind}_my_thing.py",
    }


@pytest.mark.parametrize("kind", ["storage", "scheduler"])
def test_every_placeholder_is_substituted(tmp_path: Path, kind: str) -> None:
    names = plugin_names(kind, "my_thing")
    files = rendered_files(render_plugin(kind, "my_thing", tmp_path))

    for path, text in files.items():
        for variable in names.variables():
            assert f"${{{variable}}}" not in text, f"{path} still holds ${{{variable}}}"
            assert f"${variable}" not in text, f"{path} still holds ${variable}"
        assert "__package__" not in path
        assert "__entry_name__" not in path
        assert not path.endswith(".tmpl")
    assert "MyThing" in "".join(files.values())


@pytest.mark.parametrize("kind", ["storage", "scheduler"])
def test_pyproject_declares_distribution_dependencies_and_entry_point(
    tmp_path: Path, kind: str
) -> None:
    folder = render_plugin(kind, "my_thing", tmp_path)
    pyproject = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))

    project = pyproject["project"]
    assert project["name"] == f"trader-{kind}-my-thing"
    assert set(project["dependencies"]) == {"trader", "trader-sdk"}
    assert project["entry-points"]["trader"] == {
        f"{kind}_my_thing": f"trader_{kind}_my_thing.plugin"
    }
    assert pyproject["build-system"]["build-backend"] == "hatchling.build"
    assert pyproject["tool"]["hatch"]["version"]["path"] == (
        f"src/trader_{kind}_my_thing/__init__.py"
    )
    init = (folder / pyproject["tool"]["hatch"]["version"]["path"]).read_text(encoding="utf-8")
    assert '__version__ = "0.1.0"' in init


@pytest.mark.parametrize("kind", ["storage", "scheduler"])
def test_generated_python_compiles(tmp_path: Path, kind: str) -> None:
    folder = render_plugin(kind, "x9", tmp_path)
    sources = sorted(folder.rglob("*.py"))

    assert len(sources) >= 4
    for source in sources:
        compile(source.read_text(encoding="utf-8"), str(source), "exec")


@pytest.mark.parametrize("kind", ["storage", "scheduler"])
def test_generated_code_is_lint_clean_under_its_own_config(tmp_path: Path, kind: str) -> None:
    pytest.importorskip("ruff", reason="ruff is a development tool")
    folder = render_plugin(kind, "lint_check", tmp_path)

    for command in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def import_rendered(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path, str], Any]]:
    """Import a module of a rendered plugin from its ``src`` folder, forgetting it afterwards."""
    imported: list[str] = []

    def load(folder: Path, module: str) -> Any:
        monkeypatch.syspath_prepend(str(folder / "src"))
        imported.append(module.split(".")[0])
        return importlib.import_module(module)

    yield load
    for name in list(sys.modules):
        if name.split(".")[0] in imported:
            del sys.modules[name]


def collect_registrations(hook: Callable[..., None]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def register(name: str, factory: Any, *, options: Any = None, summary: str = "") -> None:
        found[name] = {"factory": factory, "options": options, "summary": summary}

    hook(register=register)
    return found


def test_rendered_storage_plugin_registers_a_working_candle_store(
    tmp_path: Path, import_rendered: Callable[[Path, str], Any]
) -> None:
    folder = render_plugin("storage", "quick_check", tmp_path / "out")
    plugin = import_rendered(folder, "trader_storage_quick_check.plugin")
    registered = collect_registrations(plugin.register_candle_stores)["quick_check"]
    context = PluginContext(data_dir=tmp_path / "data", config_dir=tmp_path)
    series = SeriesKey("binance", "BTC/USDT", Timeframe.parse("1m"))
    candles = [Candle(60_000 * i, 10.0, 11.0, 9.0, 10.5, 3.0) for i in (3, 1, 2)]

    async def write_then_reopen() -> tuple[int, list[Candle]]:
        async with registered["factory"](registered["options"](), context) as store:
            assert isinstance(store, CandleStore)
            written = (await store.write(series, candles)).inserted
        async with registered["factory"](registered["options"](), context) as store:
            return written, (await store.read(series)).to_candles()

    written, read = asyncio.run(write_then_reopen())
    assert written == 3
    assert [candle.time for candle in read] == [60_000, 120_000, 180_000]
    assert (tmp_path / "data" / "quick_check-candles.json").is_file()


def test_rendered_scheduler_plugin_registers_a_working_schedule(
    tmp_path: Path, import_rendered: Callable[[Path, str], Any]
) -> None:
    folder = render_plugin("scheduler", "quick_check", tmp_path)
    plugin = import_rendered(folder, "trader_scheduler_quick_check.plugin")
    registered = collect_registrations(plugin.register_schedulers)["quick_check"]
    options = registered["options"](every_minutes=15, at_second=30)
    schedule = registered["factory"](options, PluginContext(tmp_path, tmp_path))

    assert isinstance(schedule, Schedule)
    assert schedule.firings(0, 3_600_000) == [30_000 + 15 * 60_000 * i for i in range(4)]
    assert schedule.next_after(30_000) == 930_000
    assert "15 minutes" in schedule.describe()


@pytest.mark.parametrize("kind", ["exchange", "strategy"])
def test_kinds_without_a_conformance_suite_are_refused_and_nothing_is_written(
    tmp_path: Path, kind: str
) -> None:
    with pytest.raises(ScaffoldError, match="not supported yet") as raised:
        render_plugin(kind, "venue", tmp_path)
    assert "\n" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_unknown_kind_is_refused_naming_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match=r"unknown plugin kind 'database'.*scheduler, storage"):
        render_plugin("database", "venue", tmp_path)


@pytest.mark.parametrize(
    "name", ["", "My", "1abc", "a-b", "a__b", "_a", "a_", "a.b", "é", "a" * 41]
)
def test_names_that_are_not_lower_case_identifiers_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ScaffoldError, match="invalid plugin name"):
        render_plugin("storage", name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_names_derive_from_kind_and_name() -> None:
    names = plugin_names("storage", "my_store2")

    assert names.distribution == "trader-storage-my-store2"
    assert names.package == "trader_storage_my_store2"
    assert names.entry_name == "storage_my_store2"
    assert names.class_prefix == "MyStore2"
    assert names.name == "my_store2"


def test_existing_folder_is_refused_without_force(tmp_path: Path) -> None:
    folder = render_plugin("storage", "taken", tmp_path)
    (folder / "pyproject.toml").write_text("edited", encoding="utf-8")

    with pytest.raises(ScaffoldError, match=r"already exists.*--force"):
        render_plugin("storage", "taken", tmp_path)
    assert (folder / "pyproject.toml").read_text(encoding="utf-8") == "edited"


def test_force_writes_the_template_over_an_existing_folder_and_keeps_other_files(
    tmp_path: Path,
) -> None:
    folder = render_plugin("storage", "taken", tmp_path)
    (folder / "pyproject.toml").write_text("edited", encoding="utf-8")
    (folder / "NOTES.md").write_text("mine", encoding="utf-8")

    assert render_plugin("storage", "taken", tmp_path, force=True) == folder
    assert "trader-storage-taken" in (folder / "pyproject.toml").read_text(encoding="utf-8")
    assert (folder / "NOTES.md").read_text(encoding="utf-8") == "mine"


def test_a_file_in_the_way_is_refused_even_with_force(tmp_path: Path) -> None:
    (tmp_path / "trader-storage-taken").write_text("a file", encoding="utf-8")

    with pytest.raises(ScaffoldError, match="is not a folder"):
        render_plugin("storage", "taken", tmp_path, force=True)


def test_render_files_is_deterministic() -> None:
    names = plugin_names("scheduler", "twice")
    assert render_files(names) == render_files(names)


# the command ---------------------------------------------------------------------------------


def trader(*arguments: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(list(arguments))
    code = exited.value.code
    return code if isinstance(code, int) else 1


def test_command_creates_the_plugin_and_says_what_to_do_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trader("plugin", "new", "storage", "mine", "--directory", str(tmp_path)) == 0

    out = capsys.readouterr().out
    folder = tmp_path / "trader-storage-mine"
    assert (folder / "src" / "trader_storage_mine" / "store.py").is_file()
    assert f"created {folder.resolve()}" in out
    assert f"pip install -e {folder.resolve()}" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["exchange", "venue"], "plugin kind 'exchange' is not supported yet"),
        (["strategy", "lang"], "plugin kind 'strategy' is not supported yet"),
        (["storage", "Bad-Name"], "invalid plugin name 'Bad-Name'"),
        (["scheduler", "cron"], "already registered by plugin schedulers (trader)"),
    ],
)
def test_command_user_errors_exit_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    assert trader("plugin", "new", *arguments, "-d", str(tmp_path)) == 1

    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_command_refuses_an_existing_folder_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trader("plugin", "new", "scheduler", "again", "-d", str(tmp_path)) == 0
    assert trader("plugin", "new", "scheduler", "again", "-d", str(tmp_path)) == 1
    assert "--force" in capsys.readouterr().err
    assert trader("plugin", "new", "scheduler", "again", "-d", str(tmp_path), "--force") == 0


def test_command_unknown_kind_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trader("plugin", "new", "database", "x", "-d", str(tmp_path)) == 2
    assert "database" in capsys.readouterr().err
