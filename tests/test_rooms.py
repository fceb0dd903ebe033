"""Which parts of vsdeblur may import which: evaluation and the tools depend on blur synthesis
and the metrics, never on the trainer, and the measurements never on the CLI that runs them."""

from __future__ import annotations

import ast

from tests.media import REPO


def imported_by(folder: str) -> dict[str, set[str]]:
    """The vsdeblur modules each file under vsdeblur/`folder` imports, at module level or inside
    a function, by path relative to vsdeblur/."""
    found = {}
    for path in sorted((REPO / "vsdeblur" / folder).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        found[str(path.relative_to(REPO / "vsdeblur"))] = {n for n in names if n.startswith("vsdeblur.")}
    return found


def test_only_the_train_command_imports_the_trainer():
    importers = [path for path, names in imported_by(".").items()
                 if not path.startswith("train/") and any(n.startswith("vsdeblur.train") for n in names)]
    assert importers == ["cli.py"]


def test_blur_synthesis_and_the_measurements_stand_below_the_cli():
    for folder, forbidden in (("blur", ("vsdeblur.train", "vsdeblur.measure", "vsdeblur.cli")),
                              ("measure", ("vsdeblur.train", "vsdeblur.cli"))):
        for path, names in imported_by(folder).items():
            assert not [n for n in names if n.startswith(forbidden)], path


def import_graph(granularity) -> dict[str, set[str]]:
    """Who imports whom among vsdeblur's modules (any import, at module level or inside a
    function), each name mapped by `granularity` (a module, or the part of vsdeblur it is in).
    The package itself is left out: its names are imported lazily, on first use."""
    modules = {path.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for path in imported_by(".")}
    graph: dict[str, set[str]] = {}
    for path, names in imported_by(".").items():
        source = granularity(path.removesuffix(".py").removesuffix("/__init__").replace("/", "."))
        for name in names:
            name = name.removeprefix("vsdeblur.")
            while name not in modules and "." in name:  # `from package import name`
                name = name.rpartition(".")[0]
            if name in modules and granularity(name) != source:
                graph.setdefault(source, set()).add(granularity(name))
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for after in sorted(graph.get(node, ())):
            if state.get(after) == 1:
                return path[path.index(after):] + [after] if after in path else [node, after]
            if after not in state and (found := visit(after, path + [after])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_cycle_between_modules_or_parts():
    assert cycle(import_graph(lambda module: module)) is None
    assert cycle(import_graph(lambda module: module.partition(".")[0])) is None


def test_the_runtime_layer_stands_below_the_engine():
    for path, names in imported_by("backends").items():
        assert not [n for n in names if n.startswith(("vsdeblur.engine", "vsdeblur.stream", "vsdeblur.vs", "vsdeblur.batch"))], path
