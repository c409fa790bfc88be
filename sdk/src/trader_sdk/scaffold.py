"""Render a new plugin distribution from the templates shipped in ``trader_sdk/templates``.

``trader plugin new KIND NAME`` calls :func:`render_plugin`. The result is a complete, separately
installable distribution ``trader-<family>-<name>/`` whose capability works and whose tests run
the SDK's conformance suite, so an author starts from green tests and changes one thing at a time.

Templates live in ``templates/common`` (every kind) and ``templates/<kind>`` (one kind). Every
template file ends in ``.tmpl`` (so no tool mistakes it for code of this package) and is rendered
with :class:`string.Template`: ``${package}`` is replaced, ``$$`` stands for a literal ``$``. In
paths, ``__package__`` and ``__entry_name__`` are replaced by the package and entry-point names.
"""

from __future__ import annotations

import re
import string
import sys
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from trader.errors import TraderError
from trader.registry import Kind

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

#: Version written into a new plugin's ``__init__.py``.
INITIAL_VERSION = "0.1.0"
#: Longest NAME accepted: entry-point names (``<family>_<name>``) must stay within 64 characters.
MAX_NAME_LENGTH = 40

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
_TEMPLATE_SUFFIX = ".tmpl"


class ScaffoldError(TraderError):
    """A plugin cannot be rendered: unknown or unsupported kind, bad name, or folder exists."""


@dataclass(frozen=True)
class KindSpec:
    """What one ``KIND`` of ``trader plugin new`` renders."""

    family: str
    capability: Kind
    #: What the plugin offers, for messages and READMEs ("candle store").
    label: str
    #: The conformance suite the generated tests subclass, or ``None`` while it does not exist.
    suite: str | None


#: Every kind ``trader plugin new`` knows, supported or not yet.
KINDS: dict[str, KindSpec] = {
    "storage": KindSpec(
        "storage",
        Kind.CANDLE_STORE,
        "candle store",
        "trader_sdk.testing.candle_store.CandleStoreConformance",
    ),
    "scheduler": KindSpec(
        "scheduler",
        Kind.SCHEDULER,
        "scheduler",
        "trader_sdk.testing.scheduler.SchedulerConformance",
    ),
    "exchange": KindSpec("exchange", Kind.EXCHANGE, "exchange adapter", None),
    "strategy": KindSpec("strategy", Kind.STRATEGY_RUNTIME, "strategy runtime", None),
}


def supported_kinds() -> list[str]:
    """The kinds :func:`render_plugin` can render today, sorted."""
    return sorted(kind for kind, spec in KINDS.items() if spec.suite is not None)


@dataclass(frozen=True)
class PluginNames:
    """Every name a new plugin uses, derived from its kind and NAME.

    For ``storage`` and ``my_store``: distribution ``trader-storage-my-store`` (also the folder),
    package ``trader_storage_my_store``, entry point ``storage_my_store`` in group ``trader``,
    capability ``my_store`` (what ``trader.toml`` names), classes prefixed ``MyStore``.
    """

    kind: str
    family: str
    name: str
    label: str
    distribution: str
    package: str
    entry_name: str
    class_prefix: str
    title: str
    version: str = INITIAL_VERSION

    def variables(self) -> dict[str, str]:
        """The template variables: every field, by its name."""
        return asdict(self)


def plugin_names(kind: str, name: str) -> PluginNames:
    """Validate ``kind`` and ``name`` and derive every name the plugin uses.

    Raises :class:`ScaffoldError` with a one-line message when ``kind`` is unknown or not yet
    supported, or ``name`` is not a lower-case identifier.
    """
    spec = KINDS.get(kind)
    supported = ", ".join(supported_kinds())
    if spec is None:
        raise ScaffoldError(f"unknown plugin kind {kind!r}: choose one of {supported}")
    if spec.suite is None:
        raise ScaffoldError(
            f"plugin kind {kind!r} is not supported yet: its conformance suite arrives with a "
            f"later release, and a template without one would only pretend; "
            f"supported kinds: {supported}"
        )
    if not _NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use at most {MAX_NAME_LENGTH} lower-case letters, "
            "digits and single underscores, starting with a letter (for example my_store)"
        )
    words = name.split("_")
    return PluginNames(
        kind=kind,
        family=spec.family,
        name=name,
        label=spec.label,
        distribution=f"trader-{spec.family}-{'-'.join(words)}",
        package=f"trader_{spec.family}_{name}",
        entry_name=f"{spec.family}_{name}",
        class_prefix="".join(word.capitalize() for word in words),
        title=" ".join(words).capitalize(),
    )


def render_plugin(kind: str, name: str, destination: Path, *, force: bool = False) -> Path:
    """Render a new ``kind`` plugin called ``name`` into ``destination``; return its folder.

    The folder is ``destination / "trader-<family>-<name>"`` (``destination`` is created when
    missing). An existing folder is refused unless ``force`` is true; then the template's files
    are written over and any other file in it is left alone. Nothing is written when a check
    fails. Raises :class:`ScaffoldError` (see :func:`plugin_names`) for a bad kind or name, or
    when the folder exists.
    """
    names = plugin_names(kind, name)
    target = Path(destination) / names.distribution
    if target.exists() and not (force and target.is_dir()):
        hint = "" if target.is_dir() else " and is not a folder"
        raise ScaffoldError(
            f"{target} already exists{hint}: choose another NAME or --directory"
            + ("" if hint else ", or pass --force to write the template over it")
        )
    rendered = render_files(names)
    try:
        for relative, text in rendered.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
    except OSError as error:
        raise ScaffoldError(f"cannot write the plugin into {target}: {error}") from error
    return target


def render_files(names: PluginNames) -> dict[str, str]:
    """Render every template file for ``names``: relative path (``/``-separated) to text."""
    root = files("trader_sdk") / "templates"
    variables = names.variables()
    rendered: dict[str, str] = {}
    for folder in ("common", names.kind):
        for relative, source in _walk(root / folder, ""):
            path = relative.removesuffix(_TEMPLATE_SUFFIX)
            path = path.replace("__package__", names.package)
            path = path.replace("__entry_name__", names.entry_name)
            try:
                rendered[path] = string.Template(source.read_text(encoding="utf-8")).substitute(
                    variables
                )
            except (KeyError, ValueError) as error:  # a template bug, not a user error
                raise RuntimeError(f"template {folder}/{relative} is broken: {error!r}") from error
    return rendered


def _walk(folder: Traversable, prefix: str) -> list[tuple[str, Traversable]]:
    """Every ``.tmpl`` file under ``folder``, with its path relative to it, sorted."""
    found: list[tuple[str, Traversable]] = []
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        relative = f"{prefix}{entry.name}"
        if entry.is_dir():
            found.extend(_walk(entry, relative + "/"))
        elif entry.name.endswith(_TEMPLATE_SUFFIX):
            found.append((relative, entry))
    return found
