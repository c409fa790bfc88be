"""Mermaid diagrams of task machines, generated from their declarations.

:func:`mermaid_diagram` draws one machine as a ``stateDiagram-v2``; :func:`update_doc_blocks`
rewrites the blocks of a Markdown document that sit between ``<!-- diagram:TYPE -->`` and
``<!-- /diagram:TYPE -->`` markers, which is how ``tools/generate_task_diagrams.py`` keeps
``docs/tasks.md`` in step with the code (a test fails when it is not).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import partial

from trader.tasks.machine import TIMEOUT, TaskDefinition, TaskError

__all__ = ["doc_block", "mermaid_diagram", "update_doc_blocks"]

_MARKER = re.compile(r"<!-- diagram:([A-Za-z0-9_]+) -->")


def mermaid_diagram(definition: TaskDefinition) -> str:
    """Return a mermaid ``stateDiagram-v2`` of ``definition`` (no code fence).

    Edges are grouped by source state in declaration order; triggers between the same two
    states share one edge; a ``timeout`` edge shows its delay and a guarded edge its guard.
    Final states lead to the end marker.
    """
    order = {name: index for index, name in enumerate(definition.state_names)}
    labels: dict[tuple[str, str], list[str]] = {}
    for edge in sorted(definition.edges(), key=lambda e: order[e.source]):
        label = edge.trigger
        if edge.trigger == TIMEOUT:
            label = f"timeout after {definition.timeout_of(edge.source):g} s"
        if edge.guard is not None:
            label += f" if {edge.guard}"
        names = labels.setdefault((edge.source, edge.dest), [])
        if label not in names:
            names.append(label)
    lines = ["stateDiagram-v2", f"    [*] --> {definition.initial}"]
    lines.extend(
        f"    {source} --> {dest}: {', '.join(names)}" for (source, dest), names in labels.items()
    )
    lines.extend(
        f"    {name} --> [*]" for name in definition.state_names if definition.is_final(name)
    )
    return "\n".join(lines) + "\n"


def doc_block(definition: TaskDefinition) -> str:
    """The Markdown that stands for ``definition`` in the docs: its diagram and a state table."""
    rows = ["| state | final | timeout | meaning |", "|---|---|---|---|"]
    for state in definition.states:
        timeout = state.get("timeout")
        rows.append(
            f"| `{state['name']}` | {'yes' if state.get('final', False) else ''} | "
            f"{'' if timeout is None else f'{timeout:g} s'} | {state.get('description', '')} |"
        )
    return "```mermaid\n" + mermaid_diagram(definition) + "```\n\n" + "\n".join(rows) + "\n"


def update_doc_blocks(text: str, definitions: Iterable[TaskDefinition]) -> str:
    """Return ``text`` with the block of each definition regenerated between its markers.

    Raises :class:`TaskError` when a definition has no block (add the two marker lines where
    it belongs) or a block names a task type that is not declared.
    """
    by_type = {definition.type: definition for definition in definitions}
    unknown = sorted(set(_MARKER.findall(text)) - set(by_type))
    if unknown:
        raise TaskError(
            f"the document has diagram blocks for undeclared task types {', '.join(unknown)}; "
            "remove those blocks or declare the types"
        )
    for task_type, definition in by_type.items():
        block = re.compile(
            rf"(<!-- diagram:{task_type} -->\n).*?(<!-- /diagram:{task_type} -->)", re.DOTALL
        )
        if not block.search(text):
            raise TaskError(
                f"the document has no diagram block for task type {task_type!r}; add the lines "
                f"'<!-- diagram:{task_type} -->' and '<!-- /diagram:{task_type} -->' where it "
                "belongs"
            )
        text = block.sub(partial(_replace, doc_block(definition)), text, count=1)
    return text


def _replace(content: str, match: re.Match[str]) -> str:
    return match.group(1) + content + match.group(2)
