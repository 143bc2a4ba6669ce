"""Imports point down only: each scm_jax subpackage imports its own modules and those of lower layers (README,
Layout), and no module imports itself back through others. Read from the source (ast), nothing is imported."""
import ast
import pathlib

import pytest

import scm_jax

ROOT = pathlib.Path(scm_jax.__file__).parent
LAYERS = (("formulations", "parallel", "models", "checkpoint"), ("data", "objectives", "samplers"), ("eval",),
          ("train",), ("inference",), ("cli", "examples"))
RANK = {package: i for i, layer in enumerate(LAYERS) for package in layer}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(name: str, modules: set[str]) -> str:
    """`from scm_jax.objectives import registry` names the module scm_jax.objectives.registry."""
    return name if name in modules else name.rsplit(".", 1)[0]


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for module, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets |= {f"{node.module}.{a.name}" for a in node.names}
        graph[module] = {resolve(t, set(files)) for t in targets if t.startswith("scm_jax.")} - {module}
    return graph


def package(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_every_package_has_a_layer():
    assert {package(m) for m in import_graph() if m != "scm_jax"} == set(RANK)


def test_imports_point_down():
    upward = sorted(f"{a} -> {b}" for a, targets in import_graph().items() if a != "scm_jax" for b in targets
                    if package(b) != package(a) and RANK[package(b)] >= RANK[package(a)])
    assert not upward, upward


def test_no_import_cycle():
    graph, done, path = import_graph(), set(), []

    def visit(m):
        if m in path:
            pytest.fail("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for t in sorted(graph.get(m, ())):
            visit(t)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def test_the_checker_sees_an_upward_import_and_a_cycle(monkeypatch):
    """The checks above can fail: a fake graph with eval -> train and a -> b -> a."""
    monkeypatch.setitem(globals(), "import_graph", lambda: {"scm_jax.eval.x": {"scm_jax.train.y"},
                                                            "scm_jax.train.y": {"scm_jax.eval.x"}})
    with pytest.raises(AssertionError, match="scm_jax.eval.x -> scm_jax.train.y"):
        test_imports_point_down()
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycle()
