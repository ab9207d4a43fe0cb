"""Data flows one way: a stage never imports a later stage; only backend imports llama_cpp."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "edgeeval"
# Leaf modules any stage may use, then the stages in the order data flows through them.
LEAVES = {
    "errors",
    "settings",
    "records",
    "metrics",
    "hostinfo",
    "gguf_check",
    "backend",
    "files",
    "memprobe",
    "profiles",
    "bandwidth",
    "generators",
    "wordmath",
    "formats",
    "chat",
    "chat_sandbox",
    "extract",
    "codeexec",
    "exec_boot",
    "sandbox",
    "kld",
    "console",
}
STAGES = [
    "catalog",
    "hub",
    "fetch",
    "recipes",
    "quantize",
    "taskfile",
    "datasets",
    "tasks",
    "measure",
    "generate",
    "worker",
    "runner",
    "store",
    "fidelity_child",
    "fidelity",
    "exchange",
    "summarize",
    "speedfmt",
    "plots",
    "html_report",
    "report",
    "compare",
]
WIRING = {"pipeline", "cli", "__main__", "__init__"}


def imported_edgeeval_modules(path: Path) -> set[str]:
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
    return found


def test_every_module_is_classified():
    modules = {p.stem for p in PKG.glob("*.py")}
    assert modules <= LEAVES | set(STAGES) | WIRING, modules - (LEAVES | set(STAGES) | WIRING)


def test_no_stage_imports_a_later_stage():
    order = {name: i for i, name in enumerate(STAGES)}
    for stage in STAGES:
        for dep in imported_edgeeval_modules(PKG / f"{stage}.py") - {"__init__"}:
            assert dep in LEAVES or order[dep] < order[stage], f"{stage} imports {dep}"


def test_leaves_import_only_leaves():
    for leaf in LEAVES:
        deps = imported_edgeeval_modules(PKG / f"{leaf}.py") - {"__init__", "__version__"}
        assert deps <= LEAVES, f"{leaf} imports {deps - LEAVES}"


def test_only_backend_imports_llama_cpp():
    for path in PKG.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        uses = any(name.split(".")[0] == "llama_cpp" for name in names if name)
        assert uses == (path.stem == "backend"), path.name
