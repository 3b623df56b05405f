"""The package's layering: no module imports from a higher layer, and no modules import each other in a cycle.

Every import counts, including those inside functions (a lazy import is still a dependency). The layers, lowest
first, are listed below by module or package name; a module not listed fails the test, so a new module has to be
placed in a layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MAIN = Path(__file__).resolve().parents[1] / "main"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # Helpers with no knowledge of models: files, errors, config files, audio I/O, attention masks, checkpoint I/O.
    ("foundation", ("main", "main.attention", "main.audio", "main.checkpointing", "main.conf", "main.errors",
                    "main.faults", "main.files", "main.hub", "main.lazy", "main.loggers", "main.provenance",
                    "main.renames")),
    # The networks and the diffusion maths they are trained and sampled with (with main.nets.original, which reads
    # the original's weight files).
    ("nets", ("main.diffusion", "main.nets", "main.text")),
    # The original's training checkpoints mapped onto this repository's layout (above the networks, which never
    # import it; its migration, which trains and converts, sits in the training layer).
    ("compat", ("main.compat", "main.compat.layout")),
    # Data: sources, manifests, datasets, data modules.
    ("data", ("main.data",)),
    # Using trained networks: generation, the CombinedSampler, weight files and exports.
    ("inference", ("main.export", "main.inference", "main.models")),
    # Training: the LightningModules, their losses, the config checks, the train loop, migration of the original's
    # training checkpoints.
    ("training", ("main.compat.__main__", "main.compat.migrate", "main.config", "main.modules", "main.training")),
    # Applications on top of everything: evaluation, command lines, demo, web UI, and the training callbacks (Hydra
    # plug-ins instantiated by name that run the analysis tools during training; no module imports them).
    ("applications", ("main.analysis", "main.callbacks", "main.demo", "main.preencode", "main.sample",
                      "main.webui")),
]


def module_name(path: Path) -> str:
    """`main/a/b.py` -> `main.a.b`, `main/a/__init__.py` -> `main.a`."""
    parts = list(path.relative_to(MAIN.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(MAIN.rglob("*.py"))}


def layer_of(module: str) -> int:
    """The index in LAYERS of the most specific entry naming `module` or a package above it (`main` itself only
    names the root package)."""
    best: tuple[int, int] | None = None  # (length of the matching name, layer)
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            matches = module == name or (name != "main" and module.startswith(name + "."))
            if matches and (best is None or len(name) > best[0]):
                best = (len(name), index)
    if best is None:
        raise KeyError(module)
    return best[1]


def imported_modules(module: str) -> set[str]:
    """The modules of `main` that `module` imports anywhere in its code (`from pkg import sub` names `pkg.sub`)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import main.a.b.name` style: the longest module prefix
                target = target.rpartition(".")[0]
            if target.startswith("main") and target != module:
                found.add(target)
    return found


GRAPH = {module: imported_modules(module) for module in MODULES}


def test_every_module_has_a_layer():
    unplaced = []
    for module in MODULES:
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_no_import_reaches_up_a_layer():
    upward = [f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
              for module, targets in sorted(GRAPH.items()) for target in sorted(targets)
              if layer_of(target) > layer_of(module)]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` as [a, b, ..., a], or [] when there is none (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def package_of(module: str) -> str:
    """The package (or top-level module) of `main` that `module` belongs to: `main.compat.migrate` -> `main.compat`."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """`graph` with each module replaced by its package (`package_of`), imports within a package left out."""
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        source = package_of(module)
        packages.setdefault(source, set()).update(package_of(t) for t in targets if package_of(t) != source)
    return packages


def test_no_two_packages_import_each_other():
    """No import cycle between packages either, even when the modules behind it form none (`main.compat.migrate`
    importing `main.export` while `main.export` imports `main.compat.layout` is one)."""
    cycle = find_cycle(package_graph(GRAPH))
    assert not cycle, "packages importing each other: " + " -> ".join(cycle)


def test_package_cycle_finder_sees_a_mutual_import_through_submodules():
    graph = {"main.compat.migrate": {"main.export"}, "main.export": {"main.compat.layout"},
             "main.compat.layout": set()}
    assert find_cycle(graph) == []  # no cycle between the modules ...
    assert find_cycle(package_graph(graph)) == ["main.compat", "main.export", "main.compat"]  # ... but between packages


def test_compat_and_export_share_a_lower_writer():
    """`main.compat` and `main.export` import neither each other, and the networks never import `main.compat`: the
    original's files are read by main.nets.original, and every export is written by main.nets.weights."""
    packages = package_graph(GRAPH)
    assert "main.export" not in packages["main.compat"] and "main.compat" not in packages["main.export"]
    assert "main.compat" not in packages["main.nets"]
    assert "main.nets.weights" in GRAPH["main.export"] and "main.nets.weights" in GRAPH["main.compat.migrate"]


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
])
def test_cycle_finder(graph, expected):
    assert find_cycle(graph) == expected


def test_import_resolution_sees_lazy_relative_and_submodule_imports():
    assert "main.data.streaming" in GRAPH["main.data.shard"]  # `from .streaming import ...` inside a function
    assert "main.nets.defaults" in GRAPH["main.nets.lengths"]  # `from main.nets import defaults`
    assert layer_of("main.compat.migrate") > layer_of("main.compat") > layer_of("main.nets.weights")


def test_training_loss_is_not_taken_from_generation_code():
    """DiffGen's loss calls the network through main.nets.conditioning, as generation does, not through it."""
    assert not [m for m in GRAPH["main.modules.losses"] if m.startswith("main.inference")]
