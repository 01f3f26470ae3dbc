"""The package's import graph is a stack: every module imports only from lower layers (or its own package)."""

import ast
import importlib.util
import pathlib

import tfsparse

PACKAGE = pathlib.Path(tfsparse.__file__).parent

# Bottom to top. A module may import its own component and any lower level.
LEVELS = {
    "keras_internals": 0, "checks": 0, "native_logs": 0, "data": 1,
    "registry": 1,
    "walk": 2, "schedules": 2, "scoring.magnitude": 2, "models": 2,
    "layers": 3,
    "scoring": 4, "surgery": 4, "optimizers": 4,
    "methods": 5,
    "callbacks": 6, "export": 6, "model_summary": 6, "distribute": 6,
    "jobs": 7, "tfmot": 7, "cli": 8, "__main__": 9,
    "__init__": 9,
}


def _component(module):
    """`tfsparse.layers.masked` -> `layers`; the mask selection of scoring is its own component."""
    parts = module.split(".")[1:] or ["__init__"]
    if parts[:2] == ["scoring", "magnitude"]:
        return "scoring.magnitude"
    return parts[0]


def _imports(path):
    """The tfsparse modules imported by the file at `path`, resolved to modules."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("tfsparse")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfsparse"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.append(name if importlib.util.find_spec(node.module) and _is_module(name) else node.module)
    return found


def _is_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        yield name, path


def test_every_module_imports_only_downwards():
    upward = []
    for name, path in _modules():
        own = _component(name)
        for imported in _imports(path):
            other = _component(imported)
            if other != own and LEVELS[other] >= LEVELS[own]:
                upward.append(f"{name} imports {imported}")
    assert upward == []


def test_every_component_has_a_level():
    assert {_component(name) for name, _ in _modules()} <= set(LEVELS)


def test_no_private_name_is_imported_across_components():
    private = []
    for name, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfsparse"):
                if _component(node.module) != _component(name):
                    private += [f"{name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []
