"""The layering of genzoo (issue #17, docs/architecture.md), read from the source with ``ast``: imports
point down — nothing below the front ends imports ``genzoo.api`` — and no two modules import each other,
directly or round a longer cycle (an import inside a function counts: it is still a dependency)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "genzoo"

#: the front ends, the only modules that may import the API
API_IMPORTERS = ("genzoo", "genzoo.demo", "genzoo.cli")



def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The genzoo modules ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_front_end(name: str) -> bool:
    return any(name == p or (p != "genzoo" and name.startswith(p + ".")) for p in API_IMPORTERS)


def test_only_the_front_ends_import_the_api():
    graph = _graph()
    importers = sorted(name for name, deps in graph.items() if "genzoo.api" in deps)
    below = [name for name in importers if not _is_front_end(name)]
    assert not below, f"modules below the front ends import genzoo.api: {below}"
    assert "genzoo.cli.sample" in importers  # the check sees imports inside functions


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles: {[sorted(c) for c in cycles]}"


def test_the_checker_finds_a_cycle_and_a_relative_import(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [{"a", "b", "c"}]
    pkg = tmp_path / "genzoo" / "x"
    pkg.mkdir(parents=True)
    (pkg / "m.py").write_text("def f():\n    from ..api import load\n    from . import n\n")
    known = {"genzoo.api", "genzoo.x.m", "genzoo.x.n", "genzoo.x"}
    assert _imports("genzoo.x.m", pkg / "m.py", known) == {"genzoo.api", "genzoo.x.n"}


#: attributes once set on models from outside: a ModelRecord (genzoo.load) or OfficialImport holds them now
RECORD_ATTRIBUTES = {"config", "model_dir", "weights_file", "_standing_key", "official_source",
                     "official_flags", "official_path"}


def _outside_assignments(tree: ast.AST) -> list[tuple[int, str]]:
    """Lines that set one of RECORD_ATTRIBUTES on an object other than ``self`` (``x.config = ...``,
    ``setattr(x, "config", ...)``)."""
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            targets = [t for t in targets if isinstance(t, ast.Attribute)]
            names = [t.attr for t in targets if not (isinstance(t.value, ast.Name) and t.value.id == "self")]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr"
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
            names = [node.args[1].value]
        else:
            continue
        found += [(node.lineno, name) for name in names if name in RECORD_ATTRIBUTES]
    return found


def test_no_module_sets_a_record_attribute_on_a_model():
    """genzoo.load describes a model by one ModelRecord (genzoo.checkpoints.record), kept beside it."""
    offenders = [f"{name}:{line} .{attr}" for name, path in _modules().items()
                 for line, attr in _outside_assignments(ast.parse(path.read_text(), str(path)))]
    assert not offenders, f"attributes set on a model from outside: {offenders}"


def test_the_record_checker_finds_outside_assignments():
    tree = ast.parse("model.config = c\nself.config = c\nsetattr(m, 'weights_file', p)\nnet.other = 1\n")
    assert _outside_assignments(tree) == [(1, "config"), (3, "weights_file")]
