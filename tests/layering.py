"""Reads the imports of every module of a package with `ast` and reports breaches of the house
rules (docs/architecture.md). No third-party tool: imports at any depth count, those inside
functions and under `if TYPE_CHECKING:` included, since each is a dependency all the same."""

import ast
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Set, Tuple

MAX_LINES = 450

# The floor imports nothing of ours; every other part may import it.
FLOOR = ("base_types", "errors", "parallel")
# What may import what, by rank: a part imports parts of lower or equal rank only (plus the named
# exceptions below). Arrows point down: systems → runners/system_api → shared parts → floor.
RANKS = {
    "floor": 0,
    "utils": 1,
    "networks": 2,
    "wrappers": 2,
    "evaluator": 2,
    "logger": 2,
    "checkpointing": 2,
    "plotting": 2,
    "system_api": 3,
    "runners": 4,
    "launch": 4,
    "systems": 5,
    "configs": 5,
}
# Parts of equal rank that must still not import each other (env adapters and networks are
# independent: a network is built from a spec, never from an env).
APART = {("wrappers", "networks"), ("networks", "wrappers")}


class Violation(NamedTuple):
    rule: str
    detail: str


def modules_of(root: Path, package: str = "stoix") -> Dict[str, Path]:
    """{dotted module name: file} of every module under root/package."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported_names(module: str, path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(modules: Dict[str, Path], package: str = "stoix") -> Dict[str, Set[str]]:
    """{module: the package's modules it imports}."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: Dict[str, Set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in _imported_names(module, path):
            if name == package or name.startswith(package + "."):
                target = resolve(name)
                if target and target != module and target != package:
                    targets.add(target)
        graph[module] = targets
    return graph


def part_of(module: str) -> str:
    """The part a module belongs to: its first folder below the package, or `floor`."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return "floor" if parts[1] in FLOOR else parts[1]


def is_system_file(module: str) -> bool:
    """stoix.systems.<family>.<anakin|sebulba>.<file>: one algorithm's file."""
    parts = module.split(".")
    return len(parts) == 5 and parts[1] == "systems" and parts[3] in ("anakin", "sebulba")


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    found: List[List[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: List[Tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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


def violations(root: Path, package: str = "stoix") -> List[Violation]:
    modules = modules_of(root, package)
    graph = import_graph(modules, package)
    found: List[Violation] = []
    for module, targets in sorted(graph.items()):
        source = part_of(module)
        for target in sorted(targets):
            destination = part_of(target)
            if source != "systems" and destination == "systems":
                found.append(Violation("shared imports systems", f"{module} -> {target}"))
            if is_system_file(module) and is_system_file(target):
                found.append(Violation("system imports system", f"{module} -> {target}"))
            if source == "floor" and destination != "floor":
                found.append(Violation("floor imports", f"{module} -> {target}"))
            if (source, destination) in APART:
                found.append(Violation("parts apart", f"{module} -> {target}"))
            if (
                source in RANKS
                and source != "floor"  # reported above, once
                and destination in RANKS
                and RANKS[destination] > RANKS[source]
                and destination != "systems"  # reported above, once
            ):
                found.append(Violation("upward import", f"{module} -> {target}"))
    for component in cycles(graph):
        found.append(Violation("import cycle", " <-> ".join(component)))
    for path in sorted(modules.values()):
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            found.append(Violation("file too long", f"{path.relative_to(root)} ({lines} lines)"))
    return found
