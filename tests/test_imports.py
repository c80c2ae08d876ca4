"""The package's modules import one another without a circle."""
from __future__ import annotations

import ast
from pathlib import Path

import steadytune

PACKAGE = Path(steadytune.__file__).parent


def _imports(path: Path) -> set[str]:
    """Modules of the package that `path` imports, at run time or for type checking alike."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")
            base = base[:len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {target} | {f"{target}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("steadytune"):
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_no_import_circles():
    files = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
    graph = {name: {target for target in _imports(path) if target in files and target != name}
             for name, path in files.items()}
    # A package's __init__ re-exporting its modules is not a circle.
    graph = {name: {t for t in targets if not (name.startswith(t + ".") and files[t].name == "__init__.py")}
             for name, targets in graph.items()}
    circles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                circles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


# The rooms of the package, lowest first: a module may import its own room and the rooms below it, never above.
LAYERS = [
    {"errors"},
    {"data", "tagging"},           # tasks, datasets, tokenization, metrics; NER's CoNLL files and tags
    {"config", "recipes"},         # the typed trial config (it canonicalizes task names) and the papers' recipes
    {"models", "stabilizers"},
    {"training", "packed"},        # one trial and its records; many seeds as one pack
    {"storage"},                   # the one stateful piece: it records what training produces
    {"analysis", "landscape", "forecast"},
    {"studies", "reporting", "reproduce"},
    {"cli", "__main__"},
]
ROOT_MODULES = {"__init__", "__main__", "config", "errors", "recipes"}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_each_room_imports_only_its_own_and_lower_rooms():
    level = {room: index for index, rooms in enumerate(LAYERS) for room in rooms}
    files = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
    rooms = {_room(name) for name in files} - {"__init__"}
    assert rooms == set(level), "every room of the package has a layer"
    upward = []
    for name, path in files.items():
        for target in _imports(path):
            if target in files and _room(target) != "__init__" and _room(name) != "__init__":
                if level[_room(target)] > level[_room(name)]:
                    upward.append(f"{name} imports {target}")
    assert upward == []


def test_the_package_root_holds_only_the_shared_modules():
    assert {p.stem for p in PACKAGE.glob("*.py")} == ROOT_MODULES
