"""The layout of shared/design/ARCHITECTURE.md §2 holds: imports only point down the layers,
there are no import circles, and every module stays readable in one sitting."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "vlaw"
MAX_LINES = 600

# Layer of each top-level part of vlaw: a module may import its own layer or lower ones.
LAYERS = {
    "losses": 0,
    "franka": 0,
    "models": 0,
    "data": 0,
    "config": 0,
    "train": 1,
    "convert": 1,
    "agents": 2,
    "rollout": 3,
    "sim": 3,
    "robot": 3,
    "eval": 3,
    "baselines": 3,
    "workdir": 4,
    "phases": 5,
    "pipeline": 6,
    "study": 7,
}
# What research code imports alone: these import nothing of vlaw but each other.
BOTTOM = ("models", "data", "losses", "franka")


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: pathlib.Path, modules: dict) -> set[str]:
    """vlaw modules `name` imports, at top level or inside functions. `from a.b import c`
    counts as importing `a.b.c` when that is a module, else `a.b`."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_imports_point_down_the_layers():
    upward = []
    for module, imported in _graph().items():
        here = LAYERS.get(_part(module))
        for target in imported:
            there = LAYERS.get(_part(target))
            if here is None or there is None:
                continue
            if there > here:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_bottom_layer_imports_nothing_of_vlaw_outside_itself():
    offenders = [
        f"{module} -> {target}"
        for module, imported in _graph().items()
        if _part(module) in BOTTOM
        for target in imported
        if _part(target) not in BOTTOM
    ]
    assert not offenders, "\n".join(sorted(offenders))


def test_rollout_imports_no_phase():
    graph = _graph()
    offenders = [
        f"{m} -> {t}"
        for m, ts in graph.items()
        if _part(m) == "rollout"
        for t in ts
        if _part(t) in ("phases", "pipeline", "workdir")
    ]
    assert not offenders, "\n".join(offenders)


def test_no_import_circles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_every_module_is_short_enough_to_read():
    long = {
        str(path.relative_to(ROOT.parent)): n
        for path in ROOT.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
