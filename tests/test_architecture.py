"""The house, as designed: which stage folder may import which, and the rules that never bend.

This states the design, not today's imports: a new import that breaks a layer fails here.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "edgeeval"
LEAVES = {
    "errors",
    "settings",
    "records",
    "contracts",
    "metrics",
    "stats",
    "text",
    "yamlio",
    "safeio",
    "orphans",
    "__init__",
    "__main__",
}
# Folders and top-level wiring, in layers: each may import the leaves and the units listed.
ALLOWED: dict[str, set[str]] = {
    "records": {"errors", "settings"},
    "contracts": {"records", "errors", "settings"},
    "errors": {"text", "settings"},  # settings.GB in the disk-space message
    "settings": set(),
    "text": set(),
    "yamlio": {"errors", "text"},
    "safeio": {"errors"},
    "orphans": set(),
    "metrics": {"records", "settings", "errors"},
    # paired comparisons and power: pure formulas over per-item scores (capability's formula)
    "stats": {"records", "errors", "metrics"},
    "engine": set(),
    "store": set(),
    "catalog": set(),
    # reading GGUF headers and KV layouts: a leaf folder, so children need no fetch/
    "gguf": set(),
    # everything that runs untrusted code or templates
    "sandbox": set(),
    # racing: pure decisions and replays over per-item verdicts, the race's log, and its
    # rounds measured through the runner (race/bench.py, called by pipeline) (issue 21)
    "race": {"store", "run"},
    "report": {"store"},
    "fetch": {"catalog", "gguf"},
    # building derived variants: recipes and llama.cpp's quantizer in a child
    "quant": {"catalog", "engine", "fetch", "gguf"},
    "tasks": {"fetch"},
    "score": {"tasks", "engine", "sandbox"},
    "run": {"engine", "catalog", "fetch", "gguf", "tasks", "score"},
    # sandbox: the per-domain corpus is rendered through the model's chat template; tasks: its
    # Hub samples (chat, tool calls) download and read as task datasets do
    "fidelity": {"engine", "catalog", "fetch", "gguf", "quant", "sandbox", "store", "tasks"},
    "pipeline": {
        "engine",
        "catalog",
        "fetch",
        "gguf",
        "quant",
        "sandbox",
        "tasks",
        "run",
        "store",
        "report",
        "fidelity",
        "race",
    },
    # the same sweep over a Ray cluster: wires the stages like pipeline (Ray imported lazily);
    # no score/: a node scores through run.accuracy, the single machine's one path
    "cluster": {
        "engine",
        "catalog",
        "fetch",
        "gguf",
        "quant",
        "sandbox",
        "tasks",
        "run",
        "store",
        "report",
    },
    "cli": {
        "engine",
        "catalog",
        "fetch",
        "tasks",
        "run",
        "store",
        "report",
        "fidelity",
        "pipeline",
        "score",
        "cluster",
        "quant",
        "sandbox",
        "gguf",
        "plan",
    },
    # `edgeeval plan`: headers (local or ranged Hub reads), this machine's bandwidth and the
    # store's earlier runs (through report.speed's roofline rows) into predictions; loads no model
    "plan": {"engine", "catalog", "fetch", "gguf", "store", "report"},
    # The Python API (edgeeval.bench / load_run): wiring, like pipeline, for notebooks.
    "api": {"engine", "catalog", "fetch", "store", "report", "pipeline"},
    "__main__": {"cli"},
}
NEVER = [
    # (importer, imported, why)
    ("report", "engine", "rendering a stored run never touches the machine"),
    ("report", "run", "re-ranking never re-runs"),
    ("report", "fetch", "a report downloads nothing"),
    ("report", "fidelity", "a report reads fidelity results from the store, not the passes"),
    ("store", "engine", "storage knows nothing of models"),
    ("catalog", "engine", "reading the catalog never loads a model"),
    ("catalog", "fetch", "the catalog is data"),
    ("tasks", "engine", "task files never load a model"),
    ("fetch", "run", "fetching never measures"),
    ("fetch", "engine", "fetching never runs llama.cpp: building a variant is quant/'s work"),
    ("gguf", "fetch", "reading a header downloads nothing"),
    ("gguf", "engine", "reading a header never loads a model"),
    ("sandbox", "engine", "the sandbox knows nothing of models"),
]


def unit_of(path: Path) -> str:
    """'report' for edgeeval/report/render.py, 'metrics' for edgeeval/metrics.py."""
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_units(path: Path) -> set[str]:
    """The edgeeval units (folders or leaf modules) a file imports, function-level included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgeeval"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("edgeeval."))
    return found - {"__version__"}


def module_of(name: str) -> Path | None:
    """The file of a dotted edgeeval module name, if it is one of ours."""
    parts = name.split(".")[1:]
    if not parts:
        return PKG / "__init__.py"
    rel = Path(*parts)
    for candidate in (PKG / rel.with_suffix(".py"), PKG / rel / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def module_imports(path: Path) -> set[Path]:
    """The edgeeval files `path` imports (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgeeval"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("edgeeval")]
        found |= {m for m in map(module_of, names) if m is not None}
    return found


def reaches(path: Path) -> set[Path]:
    """Every edgeeval file that importing `path` can load, following real imports."""
    seen, todo = set(), [path]
    while todo:
        for dep in module_imports(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def table_closure(unit: str) -> set[str]:
    """Every unit `unit` may reach through the allowed table."""
    seen, todo = set(), [unit]
    while todo:
        for dep in ALLOWED.get(todo.pop(), set()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def violations(root: Path = PKG) -> list[str]:
    """'file imports unit' for every import the table does not allow."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        unit = unit_of(path) if root == PKG else unit_of(PKG / path.relative_to(root))
        allowed = ALLOWED.get(unit, set()) | LEAVES | {unit}
        if unit in ("errors", "settings", "text", "yamlio", "safeio", "orphans"):
            allowed = ALLOWED[unit] | {unit, "__init__"}
        for dep in imported_units(path) - allowed:
            bad.append(f"{path.relative_to(root)} imports {dep}")
    return bad


def test_every_unit_is_in_the_table():
    units = {unit_of(p) for p in PKG.rglob("*.py")}
    assert units - {"__init__"} <= set(ALLOWED), units - set(ALLOWED)


def test_every_import_follows_the_layers():
    assert violations() == []


@pytest.mark.parametrize(("importer", "imported", "why"), NEVER)
def test_never_rules_hold_through_the_real_imports(importer, imported, why):
    for path in (PKG / importer).rglob("*.py"):
        reached = {unit_of(p) for p in reaches(path)}
        assert imported not in reached, f"{path.relative_to(PKG)} reaches {imported}: {why}"


def test_rendering_a_stored_run_touches_store_records_metrics_and_report_only():
    reached = {unit_of(p) for p in reaches(PKG / "report" / "render.py")}
    leaves = {"records", "metrics", "stats", "settings", "errors", "text", "safeio", "__init__"}
    assert reached <= {"report", "store"} | leaves, reached


def test_the_table_itself_has_no_cycle():
    for unit in ALLOWED:
        assert unit not in table_closure(unit), f"{unit} can reach itself"


def test_only_the_engine_backend_imports_llama_cpp():
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        uses = any(name.split(".")[0] == "llama_cpp" for name in names if name)
        assert uses == (path.relative_to(PKG).as_posix() == "engine/backend.py"), path


def test_nothing_below_cli_prints():
    for path in PKG.rglob("*.py"):
        if unit_of(path) in ("cli", "__main__"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                # the child processes talk to their parent over stdout: allowed only with an
                # explicit file= (the protocol stream), never bare prints to the terminal
                assert any(k.arg == "file" for k in node.keywords), f"{path}:{node.lineno}"


def test_the_check_catches_a_report_importing_the_engine(tmp_path):
    """The rule can fail: a report module that imports the backend is reported."""
    fake = tmp_path / "report"
    fake.mkdir()
    (fake / "bad.py").write_text("from edgeeval.engine.backend import library_info\n")
    assert violations(tmp_path) == ["report/bad.py imports engine"]


def test_help_imports_neither_numpy_nor_llama_cpp():
    """`edgeeval --help` stays light: the CLI imports the stages only when a command runs."""
    code = (
        "import sys; from edgeeval.cli.main import build_parser; build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'llama_cpp'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_edgeeval_is_light_and_its_api_loads_on_first_use():
    """`import edgeeval` loads no stage; `edgeeval.bench` is the API's, found lazily."""
    import subprocess
    import sys

    code = (
        "import sys, edgeeval; before = set(sys.modules); "
        "assert edgeeval.bench.__module__ == 'edgeeval.api'; "
        "print(sorted(m for m in before if m.startswith(('edgeeval.', 'llama_cpp', 'numpy'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    import edgeeval

    assert set(edgeeval.__all__) >= {"bench", "load_run", "__version__"}


# --- the README's module map names every folder and module, and nothing else -------------

README = PKG.parent / "README.md"
_MAP_ROW = re.compile(r"^\| `([^`]+)` \|(.*)\|[^|]*\|\s*$")


def map_rows(readme: str) -> dict[str, str]:
    """{first-column name: the rest of the row} of the "### Module map" table in the README."""
    start = readme.index("### Module map")
    end = readme.index("\n#", start + 1)
    rows: dict[str, str] = {}
    for line in readme[start:end].splitlines():
        found = _MAP_ROW.match(line)
        if found:
            name = found.group(1)
            assert name not in rows, f"README module map: '{name}' has two rows"
            rows[name] = found.group(2)
    return rows


def package_units(pkg: Path = PKG) -> dict[str, set[str]]:
    """{'report/': {'render.py', ...}, 'api.py': set()}: every folder with its modules, and
    every top-level module, as the map names them."""
    units: dict[str, set[str]] = {}
    for entry in sorted(pkg.iterdir()):
        if entry.is_dir() and (entry / "__init__.py").exists():
            units[f"{entry.name}/"] = {p.name for p in entry.glob("*.py")} - {"__init__.py"}
        elif entry.suffix == ".py":
            units[entry.name] = set()
    return units


def map_problems(readme: str, pkg: Path = PKG) -> list[str]:
    """What the README module map and the package disagree on; [] when they agree."""
    rows, units = map_rows(readme), package_units(pkg)
    problems = [
        f"{name} exists but the README module map has no row for it"
        for name in units
        if name not in rows
    ]
    problems += [
        f"the README module map names {name}, which does not exist"
        for name in rows
        if name not in units
    ]
    for folder, modules in units.items():
        if folder.endswith("/") and folder in rows:
            named = set(re.findall(r"`([\w]+\.py)`", rows[folder]))
            problems += [f"the README row of {folder} does not name {m}" for m in modules - named]
            problems += [
                f"the README row of {folder} names {m}, not in it" for m in named - modules
            ]
    return sorted(problems)


def test_the_readme_module_map_names_every_folder_and_module():
    assert map_problems(README.read_text()) == []


def test_the_module_map_check_catches_an_unlisted_and_a_stale_name(tmp_path):
    """The check can fail: a module the map does not name, a row for a folder that is gone."""
    pkg = tmp_path / "edgeeval"
    (pkg / "report").mkdir(parents=True)
    for name in ("__init__.py", "api.py", "report/__init__.py", "report/render.py"):
        (pkg / name).write_text("")
    readme = (
        "### Module map\n\n| folder or module | what | add |\n|---|---|---|\n"
        "| `__init__.py` | x | - |\n| `report/` | `render.py`, `plots.py` | - |\n"
        "| `cluster/` | gone | - |\n\n## Next\n"
    )
    assert map_problems(readme, pkg) == [
        "api.py exists but the README module map has no row for it",
        "the README module map names cluster/, which does not exist",
        "the README row of report/ names plots.py, not in it",
    ]


def test_a_folders_init_imports_nothing():
    """As the README says: a folder's __init__.py is a docstring, at most with constants
    (fidelity's defaults), so importing one stage never drags in another."""
    for init in sorted(PKG.glob("*/__init__.py")):
        for node in ast.parse(init.read_text()).body[1:]:
            is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
            constant = isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            assert is_future or constant, f"{init.relative_to(PKG)}:{node.lineno}"


#: Names that mean one thing everywhere, with the one module that defines them.
DEFINED_ONCE = {
    "Progress": "text.py",
    "GB": "settings.py",
    "ISO_TIME": "settings.py",
    "HUMANEVAL_STOPS": "tasks/suite.py",
    "EXTRACTORS": "tasks/schema.py",
}


def module_level_definitions(root: Path = PKG) -> dict[str, list[str]]:
    """{name: the modules assigning it at module level} for the DEFINED_ONCE names."""
    found: dict[str, list[str]] = {name: [] for name in DEFINED_ONCE}
    for path in sorted(root.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in found:
                    found[target.id].append(path.relative_to(root).as_posix())
    return found


def test_shared_names_are_defined_once():
    """A second `Progress = Callable[[str], None]` or a second HumanEval stop list drifts
    apart from the first; each of these lives in one module and is imported from there."""
    assert module_level_definitions() == {n: [m] for n, m in DEFINED_ONCE.items()}


def test_the_defined_once_check_sees_a_second_definition(tmp_path):
    (tmp_path / "text.py").write_text("Progress = object\n")
    (tmp_path / "fetch").mkdir()
    (tmp_path / "fetch" / "hub.py").write_text("Progress: object = object\n")
    assert module_level_definitions(tmp_path)["Progress"] == ["fetch/hub.py", "text.py"]
