"""Which parts of vsdeblur may import which: evaluation and the tools depend on blur synthesis
and the metrics, never on the trainer, and the measurements never on the CLI that runs them."""

from __future__ import annotations

import ast

from tests.conftest import REPO


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
