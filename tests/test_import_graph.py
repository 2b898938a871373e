"""The import graph of hashbay's own modules, read from the source (nothing imported).

Layering is what keeps the agent readable and the simulator out of it: no two modules
import each other even indirectly, and nothing in agent/ or drivers/ imports tools/ (the
simulator is a bus back-end chosen by name, `hashbay.agent.hardware.bus_backends`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("agent", "drivers", "tools")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = ["hashbay", *path.relative_to(ROOT).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imported(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        for alias in node.names:
            yield f"{base}.{alias.name}"  # a submodule, or a name in `base`
            yield base


def imports_of(module: str, *, with_type_checking: bool) -> set[str]:
    """The hashbay modules `module` imports, at module level or inside functions."""
    path = MODULES[module]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child) and not with_type_checking:
                for other in child.orelse:
                    visit(other)
                continue
            found.update(_imported(child, module, path.name == "__init__.py"))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name in MODULES and name != module}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root, edges_out in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(edges_out)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _graph(prefixes: tuple[str, ...], *, with_type_checking: bool) -> dict[str, set[str]]:
    chosen = [m for m in MODULES if m.startswith(prefixes)]
    return {
        m: {d for d in imports_of(m, with_type_checking=with_type_checking) if d in chosen}
        for m in chosen
    }


def test_the_cycle_finder_finds_a_cycle_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_graph_sees_module_level_and_lazy_imports() -> None:
    assert "hashbay.agent.daemon.config" in imports_of(
        "hashbay.agent.hardware.buses", with_type_checking=False
    )
    assert "hashbay.tools.sim.rig" in imports_of(
        "hashbay.tools.sim.backend", with_type_checking=False
    )


def test_no_module_imports_itself_back_when_it_runs() -> None:
    assert cycles(_graph(("hashbay.",), with_type_checking=False)) == []


def test_the_agent_and_the_drivers_have_no_cycles_even_in_annotations() -> None:
    graph = _graph(("hashbay.agent", "hashbay.drivers"), with_type_checking=True)
    assert cycles(graph) == []


@pytest.mark.parametrize("folder", ["hashbay.agent", "hashbay.drivers"])
def test_the_daemon_and_the_drivers_never_import_tools(folder: str) -> None:
    leaks = {
        module: sorted(
            d for d in imports_of(module, with_type_checking=True) if d.startswith("hashbay.tools")
        )
        for module in MODULES
        if module.startswith(folder)
    }
    assert {m: d for m, d in leaks.items() if d} == {}
