"""The one-way house (docs/architecture.md), checked from the code's own imports: every import of every
module (top level or inside a function), read with ``ast``.

- a module imports only from its own layer or the layers below it;
- no import circle, but the one listed below;
- no file over ``CAP`` lines, but the ones listed below;
- a function-local augforge import outside cli/ carries a comment saying why it is deferred;
- no module imports another's private (underscored) name.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "augforge"

#: The layers, lowest first; a module's layer is its top-level name under augforge.
LAYERS = [
    {"__init__", "errors", "atomic", "faults", "device", "paths", "checks", "engine", "progress"},
    {"storage"},
    {"datasets", "models"},
    {"augment", "balance", "audit"},
    {"recipe"},
    {"pipelines"},
    {"train"},
    {"experiments", "deploy"},
    {"cli", "__main__"},
]
#: Lines a module may have.
CAP = 450
#: Files allowed past the cap, each with its reason (none today).
OVER_CAP: dict[str, str] = {}
#: Circles allowed, each with its reason.
ALLOWED_CIRCLES = {
    ("datasets.reader", "datasets.torch_view"):
        "Dataset.torch() returns a ShardDataset view of itself, which reads through a Dataset; both imports "
        "are function-local (torch loads only when a torch view is asked for)",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        out[name.removesuffix(".__init__") if name != "__init__" else name] = path
    return out


MODULES = _modules()


def layer(module: str) -> int:
    """The layer of a module (dotted name under augforge)."""
    head = module.split(".")[0]
    for index, names in enumerate(LAYERS):
        if head in names:
            return index
    raise AssertionError(f"augforge/{head}: in no layer; add it to LAYERS (and docs/architecture.md)")


def _targets(module: str, node: ast.AST) -> list[tuple[str, str]]:
    """(imported module, imported name) pairs of an import statement, augforge modules only."""
    found = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.startswith("augforge."):
                found.append((alias.name.removeprefix("augforge."), ""))
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = module.split(".")
            parts = parts if MODULES[module].name == "__init__.py" else parts[:-1]
            base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        elif base == "augforge":
            base = ""
        elif base.startswith("augforge."):
            base = base.removeprefix("augforge.")
        else:
            return []
        for alias in node.names:
            joined = f"{base}.{alias.name}" if base else alias.name
            found.append((joined, "") if joined in MODULES else (base or "__init__", alias.name))
    return [(target, name) for target, name in found if target in MODULES]


def _imports():
    """Every augforge import: (module, target, imported name, line, function-local, the statement's text)."""
    for module, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        tree = ast.parse(source)
        local = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target, name in _targets(module, node):
                    if target != module:
                        text = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                        yield module, target, name, node.lineno, id(node) in local, text


IMPORTS = list(_imports())


def test_every_module_sits_in_a_layer():
    assert {layer(m) for m in MODULES} == set(range(len(LAYERS)))


def test_no_module_imports_a_higher_layer():
    upward = [f"augforge/{m.replace('.', '/')} line {line}: imports {t} (layer {layer(t)} above {layer(m)})"
              for m, t, _, line, _, _ in IMPORTS if layer(t) > layer(m)]
    assert not upward, "\n".join(upward)


def _circles(edges: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                    found.append(tuple(sorted(component)))
    return found


def test_the_circle_finder_finds_circles():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _circles(edges) == [("a", "b", "c")]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_but_the_listed_one():
    edges = defaultdict(set)
    for m, t, _, _, _, _ in IMPORTS:
        edges[m].add(t)
    circles = _circles(edges)
    assert [c for c in circles if c not in ALLOWED_CIRCLES] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_file_over_the_cap(module):
    lines = MODULES[module].read_text(encoding="utf-8").count("\n")
    assert lines <= CAP or module in OVER_CAP, f"augforge/{module.replace('.', '/')}: {lines} lines (cap {CAP})"


def test_function_local_imports_say_why():
    """Outside cli/ (whose handlers import their job when they run), a deferred augforge import names its
    reason in a comment: a heavy optional package, or the listed circle."""
    silent = [f"augforge/{m.replace('.', '/')} line {line}: {text.strip()}"
              for m, t, _, line, local, text in IMPORTS if local and layer(m) != layer("cli") and "#" not in text]
    assert not silent, "\n".join(silent)


def test_no_module_imports_another_modules_private_name():
    private = [f"augforge/{m.replace('.', '/')} line {line}: {name} from {t}"
               for m, t, name, line, _, _ in IMPORTS if name.startswith("_") and not name.startswith("__")]
    assert not private, "\n".join(private)


def test_library_errors_name_options_and_the_cli_names_its_flags(capsys):
    """An OptionError reads with the parameter's name from Python and with the flag from the command that
    has it; an option the command lacks (a recipe key) keeps its own name."""
    from augforge.cli import build_parser, flag_of, main
    from augforge.engine import EngineSpec
    from augforge.errors import OptionError

    with pytest.raises(OptionError) as refused:
        EngineSpec("ray", workers=0)
    assert str(refused.value) == "workers 0: expected at least 1" and refused.value.options == ["workers"]
    args = build_parser().parse_args(["build", "recipe.yaml"])
    assert refused.value.render(lambda name: flag_of(args, name)) == "--workers 0: expected at least 1"
    assert flag_of(args, "test_split") == "test_split"  # build takes it from the recipe, not a flag
    assert flag_of(build_parser().parse_args(["evaluate", "model.pt", "data"]), "data") == "data"  # positional
    assert main(["report", "digits", "--test-split", "0.7", "--val-split", "0.5"]) == 1
    assert capsys.readouterr().err.strip() == (
        "augforge report: error: --test-split 0.7 + --val-split 0.5 leave nothing for train; keep their sum below 1")


#: Lines a function may have (its def to its last line).
FUNCTION_LINES = 80
#: Parameters a function may take (self and cls not counted).
FUNCTION_PARAMETERS = 12
#: Functions allowed past the parameter bound, each with its reason (at most 3).
MANY_PARAMETERS = {
    "balance.apply.balance_dataset":
        "the Python face of `augforge balance`: one keyword per CLI flag (strategy, k, seed, splits, workers, ...), "
        "each documented where the flag is",
    "datasets.ingest.write_dataset":
        "writes any source's rows with their split, imbalance, cleaning and provenance settings: the manifest "
        "records each of them by name",
    "datasets.ingest.ingest":
        "the Python face of `augforge ingest`: one keyword per CLI flag (splits, imbalance, limits, workers, ...)",
}
#: Modules the one-run training room may hold (``__init__`` included).
TRAIN_MODULES = 16


def _functions():
    """(dotted module.function, lines, parameters) of every function and method in augforge/."""
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
                count = len(names) - (1 if names and names[0] in ("self", "cls") else 0)
                yield f"{module}.{node.name}", node.end_lineno - node.lineno + 1, count


def test_no_function_over_the_line_bound():
    long = [f"augforge/{name}: {lines} lines" for name, lines, _ in _functions() if lines > FUNCTION_LINES]
    assert not long, "\n".join(long)


def test_few_functions_take_many_parameters_and_each_says_why():
    assert len(MANY_PARAMETERS) <= 3
    many = {name: count for name, _, count in _functions() if count > FUNCTION_PARAMETERS}
    assert set(many) <= set(MANY_PARAMETERS), f"over {FUNCTION_PARAMETERS} parameters, unlisted: " + ", ".join(
        f"{name} ({count})" for name, count in many.items() if name not in MANY_PARAMETERS)


def test_train_holds_what_trains_one_run():
    """Experiments (many runs) and deployment live in their own rooms above train/."""
    train = [m for m in MODULES if m == "train" or m.startswith("train.")]
    assert len(train) <= TRAIN_MODULES, sorted(train)
    assert not any(m.startswith("train.") and m.split(".")[1] in ("ablate", "tune", "crossfit", "export", "quantize",
                                                                   "models") for m in MODULES)
