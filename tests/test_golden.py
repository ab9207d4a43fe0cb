"""A stored real run re-renders to exactly the stored report.md, report.csv and report.json.

tests/golden/run/ holds one real `edgeeval bench` run on SmolLM2-135M (arith, word-math and a
skipped humaneval, --limit 3, plus a truncated copy that fails to load) and a fidelity pass
(the model against itself); tests/golden/README.md says how it was made. The expected reports
in tests/golden/ were rendered from it by the code of commit d595175. Everything the reports
show (host, dates, timings) comes from the stored files, so a byte-for-byte match holds on
any machine; a difference means a change to what users read, and should be deliberate:
then rerun `python -m tests.test_golden` and review the diff of tests/golden/.
"""

from __future__ import annotations

import difflib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeeval import settings
from edgeeval.report.render import render_run

GOLDEN = Path(__file__).resolve().parent / "golden"
RUN = GOLDEN / "run"
OUTPUTS = ("report.md", "report.csv", "report.json")


def render_golden_run(root: Path) -> dict[str, bytes]:
    """Copy the stored run into `root` (a reports directory with no SQLite store, so no other
    run or host joins in), render it, and return each of OUTPUTS by name as bytes."""
    run_id = json.loads((RUN / "run.json").read_text())["run_id"]
    shutil.copytree(RUN, root / run_id)
    _, _, paths = render_run(run_id, root=root)
    return {name: paths[name.split(".")[1]].read_bytes() for name in OUTPUTS}


def _diff(name: str, expected: bytes, got: bytes) -> str:
    lines = difflib.unified_diff(
        expected.decode().splitlines(), got.decode().splitlines(), name, "rendered", lineterm=""
    )
    return "\n".join(list(lines)[:40])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The golden run rendered once for the module (rendering draws the plots: seconds)."""
    return render_golden_run(tmp_path_factory.mktemp("golden") / "reports")


@pytest.mark.parametrize("name", OUTPUTS)
def test_stored_run_renders_to_the_golden_report(rendered: dict[str, bytes], name: str) -> None:
    got = rendered[name]
    expected = (GOLDEN / name).read_bytes()
    assert got == expected, _diff(name, expected, got)


def test_golden_run_covers_every_report_section() -> None:
    """The fixture exercises what a refactor could break: a ranked row and a failed one, a
    scored and a skipped task, both kinds of per-item files, and fidelity."""
    markdown = (GOLDEN / "report.md").read_text()
    for heading in (
        "## Accuracy per task",
        "## Memory, latency and the bandwidth roofline",
        "## Failed or skipped",
        "## Host and settings",
        "## Variants: size, bits per weight, speed, accuracy and fidelity",
    ):
        assert heading in markdown
    rows = json.loads((GOLDEN / "report.json").read_text())["rows"]
    assert [r["rank"] for r in rows] == [1, None]
    assert {p.name for p in RUN.iterdir()} >= {
        "run.json",
        "records.jsonl",
        "samples.jsonl",
        "generations.jsonl",
        "fidelity.jsonl",
    }


# The child makes every import of llama_cpp fail (a None entry in sys.modules), checks that it
# does, then runs `edgeeval report RUN`.
_WITHOUT_LLAMA = """
import sys
sys.modules["llama_cpp"] = None
try:
    import llama_cpp
except ImportError:
    pass
else:
    raise SystemExit("llama_cpp is still importable")
from edgeeval.cli.main import main
raise SystemExit(main(["report", sys.argv[1]]))
"""


def test_report_rerenders_without_loading_any_model() -> None:
    """`edgeeval report` rewrites a stored run's reports where llama_cpp cannot be imported,
    and they are the golden ones."""
    run_id = json.loads((RUN / "run.json").read_text())["run_id"]
    directory = settings.reports_dir() / run_id
    shutil.copytree(RUN, directory)
    rerun = subprocess.run(
        [sys.executable, "-c", _WITHOUT_LLAMA, run_id], capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "| 1 | smollm2-135m-instruct-q4_1 |" in rerun.stdout
    for name in OUTPUTS:
        assert (directory / name).read_bytes() == (GOLDEN / name).read_bytes(), name
    assert "10^9 bytes" in (directory / "report.md").read_text()


def regenerate(scratch: Path) -> None:
    """Rewrite the expected reports in tests/golden/ from the stored run."""
    for name, data in render_golden_run(scratch).items():
        (GOLDEN / name).write_bytes(data)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        regenerate(Path(tmp))
