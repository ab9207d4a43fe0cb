"""Racing (issue 21): a full run, 1000 replays of the race over its stored verdicts, the null
check, and one real race alternated with a full run.

Phases (all by default; each can be run alone, and every one can be run again):
1. full: the full run of at least seven variants (the three embedded models plus
   Qwen2.5-Coder-0.5B requantized to Q8_0, NVFP4, MXFP4 and the mixed recipe) on the offline
   suite with HumanEval's code executed (`edgeeval bench ... --allow-code-exec`). The run id
   is kept in reports/racing/state-<hash of models and options>.json, so an interrupted
   full run is resumed
   (`edgeeval bench --resume RUN`) by running this script again.
2. replay: the stored per-item verdicts of the full run (read through edgeeval.store), 1000
   seeded replays of the race at the default confidence (and at the other levels in
   --levels): agreement of the order and the Pareto front with the full run, the share of item
   evaluations used, the false-settle rate; the null check (simulated variants with identical
   per-item success probabilities); the paired and unpaired SE of the capability difference
   of Q8_0 against Q4_K_M.
3. race: one real race (`edgeeval bench --race`) and one more full run, alternated (race
   first), with their wall times and item counts; skipped, and said so in the results, when
   this edgeeval has no `bench --race`.
Results: reports/racing/<time>.json (and the summary printed).

Usage (repository root; loads models for hours on a laptop, so on a quiet machine and, on a
shared one, under the CPU lock):
    flock /tmp/edgeeval-cpu.lock .venv/bin/python benchmarks/racing_bench.py
    .venv/bin/python benchmarks/racing_bench.py --phases replay --run RUN_ID   # a stored run
    make racing-bench RACING_ARGS="--limit 40"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.race.replay import null_replays, replay, settle_projection
from edgeeval.race.rules import CAPABILITY, PER_GB, RaceConfig
from edgeeval.race.verdicts import VerdictTable, build_table
from edgeeval.stats import TaskItems, capability_difference
from edgeeval.store import items
from edgeeval.store import runs as store

VARIANTS = [
    "qwen2.5-coder-0.5b-instruct-q4_k_m",
    "gemma-3-270m-q4_k_m",
    "smollm2-135m-instruct-q4_1",
    "qwen2.5-coder-0.5b-rq-q8_0",
    "qwen2.5-coder-0.5b-rq-nvfp4",
    "qwen2.5-coder-0.5b-rq-mxfp4",
    "qwen2.5-coder-0.5b-rq-fp4-ffn-q8-attn",
]
#: Suite sizes (times this one) of the settle projection; 54x is about MMLU's 14,042 items.
SCALES = (1.0, 4.0, 16.0, 54.0)
PAIRED_PAIR = ("qwen2.5-coder-0.5b-rq-q8_0", "qwen2.5-coder-0.5b-instruct-q4_k_m")


def out_dir() -> Path:
    path = settings.reports_dir() / "racing"
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_path(args: argparse.Namespace) -> Path:
    """The state of the full run these models and options make (one file per combination,
    so a smaller trial run never stands in for the seven-variant one)."""
    what = json.dumps([sorted(args.models), bench_args(args)]).encode()
    return out_dir() / f"state-{hashlib.sha256(what).hexdigest()[:10]}.json"


def load_state(args: argparse.Namespace) -> dict[str, Any]:
    path = state_path(args)
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(state: dict[str, Any]) -> None:
    path = Path(state["path"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


def edgeeval_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeeval", *args]


def bench_args(args: argparse.Namespace) -> list[str]:
    """The options of the full run (and of the real race, which adds --race)."""
    out = ["--suite", args.suite, "--allow-code-exec", "--reps", str(args.reps)]
    if args.limit:
        out += ["--limit", str(args.limit)]
    if args.threads:
        out += ["--threads", str(args.threads)]
    return out


def new_run_since(before: set[str]) -> str | None:
    """The run a bench started since `before` was listed (its manifest is written first)."""
    fresh = [r for r in store.list_runs() if r not in before]
    return fresh[-1] if fresh else None


def timed_bench(cmd: list[str], label: str) -> tuple[str | None, float, int]:
    """Run one bench command; (its run id, wall seconds, exit code)."""
    before = set(store.list_runs())
    print(f"[{label}] {' '.join(cmd[2:])}", flush=True)
    start = time.monotonic()
    code = subprocess.call(cmd)
    return new_run_since(before), time.monotonic() - start, code


def complete(run_id: str, names: list[str]) -> bool:
    """True when every variant of `names` has an ok record in the run."""
    try:
        records = store.load_records(run_id)
    except Exception:  # noqa: BLE001 - a run with no records yet is not complete
        return False
    ok = {r.variant.name for r in records if r.status == rec.STATUS_OK}
    return set(names) <= ok


def interrupted_run(state: dict[str, Any], models: list[str]) -> str | None:
    """The full run an earlier, interrupted invocation started: the newest run since then
    whose manifest names exactly these models."""
    before = set(state.get("runs_before", []))
    if not before and "runs_before" not in state:
        return None
    for run_id in reversed([r for r in store.list_runs() if r not in before]):
        if set(store.read_manifest(run_id).get("variants", [])) == set(models):
            return run_id
    return None


def phase_full(args: argparse.Namespace, state: dict[str, Any]) -> str:
    """Run the full run, or resume the one state.json names until it is complete."""
    run_id = args.run or state.get("full_run") or interrupted_run(state, args.models)
    if run_id and complete(run_id, args.models):
        print(f"[full] run {run_id} is complete")
        return run_id
    if run_id:
        cmd = edgeeval_cmd("bench", "--resume", run_id)
    else:
        cmd = edgeeval_cmd("bench", *args.models, *bench_args(args))
        state["runs_before"] = store.list_runs()  # an interrupted start is found from these
        save_state(state)
    got, wall, code = timed_bench(cmd, "full")
    run_id = run_id or got
    if run_id is None:
        raise SystemExit(f"[full] the bench started no run (exit {code})")
    state["full_run"] = run_id
    state.setdefault("full_wall_s", []).append(wall)
    save_state(state)
    if not complete(run_id, args.models):
        raise SystemExit(
            f"[full] run {run_id} is not complete (exit {code}); run this script again to resume it"
        )
    return run_id


def stored_table(run_id: str) -> VerdictTable:
    """The run's per-item verdicts, read through the store: each stored line attributed to its
    record (store.items; an older run only where its order is unambiguous)."""
    root = settings.reports_dir()
    manifest = store.read_manifest(run_id, root)
    in_order = items.records_in_file_order(run_id, root)
    got = items.load_items(
        run_id, root, in_order, concurrent=bool(manifest.get("allow_concurrent"))
    )
    records = list(store.load_records(run_id, root))
    return build_table(records, {r.variant.name: got.of(r) for r in records}, got.clusters_of)


def paired_vs_unpaired(table: VerdictTable, a: str, b: str) -> dict[str, Any] | None:
    if a not in table.variants or b not in table.variants:
        return None
    diff = capability_difference(
        [TaskItems(t.task, tuple(t.right[a]), tuple(t.right[b]), t.chance) for t in table.tasks]
    )
    return {
        "a": a,
        "b": b,
        "diff": diff.diff,
        "se_paired": diff.se,
        "se_unpaired": diff.se_unpaired,
        "ratio": diff.se / diff.se_unpaired if diff.se_unpaired else None,
        "n_items": diff.n_items,
    }


def summary_dict(s: Any) -> dict[str, Any]:
    return {
        "confidence": s.config.confidence,
        "first_fraction": s.config.first_fraction,
        "rank_by": s.config.rank_by,
        "rounds": s.config.rounds,
        "n_replays": s.n_replays,
        "full_order": list(s.full.order),
        "full_front": sorted(s.full.front),
        "same_order_strict": s.strict_order,
        "same_order_separable": s.separable_order,
        "same_order_survivors": s.survivor_order,
        "full_report_front": sorted(s.full_report_front),
        "same_front_report_rule": s.report_front,
        "same_front_point_estimates": s.front,
        "same_answer_strict": s.answer,
        "same_answer_separable": s.separable_answer,
        "items_used": s.items_used,
        "items_used_max": s.items_used_max,
        "false_settle": s.false_settle,
        "mean_items_per_variant": s.stopped_after,
        "beaten_share": s.beaten,
    }


def phase_replay(args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    table = stored_table(run_id)
    print(
        f"[replay] run {run_id}: {len(table.variants)} variants, {len(table.tasks)} tasks, "
        f"{table.n_items} items each ({table.dropped_items} left out: not judged)"
    )
    out: dict[str, Any] = {
        "run_id": run_id,
        "variants": list(table.variants),
        "memory_gb": table.memory_gb,
        "tasks": {t.task: len(t.item_ids) for t in table.tasks},
        "replays": [],
    }
    for level, margin in [(lv, m) for m in args.margins for lv in args.levels]:
        start = time.monotonic()
        s = replay(table, RaceConfig(confidence=level, margin=margin), n_replays=args.replays)
        row = summary_dict(s) | {"margin": margin, "wall_s": time.monotonic() - start}
        out["replays"].append(row)
        print(
            f"[replay] confidence {level}, margin {margin:g}: same order {s.strict_order:.1%} "
            f"(separable pairs {s.separable_order:.1%}, but among the beaten "
            f"{s.survivor_order:.1%}), same front {s.report_front:.1%} (report's rule; "
            f"point estimates {s.front:.1%}), items used "
            f"{s.items_used:.1%} (max {s.items_used_max:.1%}), false settle {s.false_settle:.1%}"
        )
    out["projection"] = {}
    for rank_by in (PER_GB, CAPABILITY):
        proj = settle_projection(table, RaceConfig(rank_by=rank_by), scales=SCALES)
        out["projection"][rank_by] = {
            "need_items": {v: (None if math.isinf(x) else x) for v, x in proj.need.items()},
            "share_at_scale": {str(k): v for k, v in proj.shares.items()},
        }
        shares = ", ".join(f"{k:g}x {v:.0%}" for k, v in proj.shares.items())
        print(f"[replay] projected items used by {rank_by}, per suite size: {shares}")
    start = time.monotonic()
    rate = null_replays(args.replays, RaceConfig(rank_by=CAPABILITY), n_variants=3, seed=21)
    out["null_check"] = {
        "n_replays": args.replays,
        "variants": 3,
        "items_per_task": [200, 200, 200],
        "declared_different": rate,
        "wall_s": time.monotonic() - start,
    }
    print(f"[replay] null check: declared different in {rate:.1%} of {args.replays} races")
    out["paired_vs_unpaired"] = paired_vs_unpaired(table, *PAIRED_PAIR)
    if out["paired_vs_unpaired"]:
        p = out["paired_vs_unpaired"]
        print(
            f"[replay] {p['a']} - {p['b']}: {p['diff']:.2f} points, paired SE "
            f"{p['se_paired']:.2f}, unpaired SE {p['se_unpaired']:.2f}"
        )
    return out


def has_race_option() -> bool:
    help_text = subprocess.run(
        edgeeval_cmd("bench", "--help"), capture_output=True, text=True, check=False
    ).stdout
    return "--race" in help_text


def items_answered(run_id: str) -> int:
    return sum(t.n for r in store.load_records(run_id) for t in r.tasks if t.status == "ok")


def accuracy_s(run_id: str) -> float:
    return sum(t.elapsed_s for r in store.load_records(run_id) for t in r.tasks)


def phase_race(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    if not has_race_option():
        return {"skipped": "this edgeeval has no `bench --race`: the race is not wired yet"}
    rows = []
    race = ["--race", *(["--race-by", args.race_by] if args.race_by else [])]
    kinds = [("race", race), ("full", [])][: 2 if args.alternate == "race,full" else 1]
    if args.alternate == "race" and state.get("full_run"):
        # the full run of phase 1, measured just before under the same options and lock
        full = state["full_run"]
        rows.append(
            {
                "kind": "full (phase 1, just before)",
                "run_id": full,
                "wall_s": state.get("full_wall_s", [None])[-1],
                "accuracy_s": accuracy_s(full),
                "items_answered": items_answered(full),
            }
        )
    for label, extra in kinds:
        cmd = edgeeval_cmd("bench", *args.models, *bench_args(args), *extra)
        run_id, wall, code = timed_bench(cmd, f"real {label}")
        rows.append(
            {
                "kind": label,
                "run_id": run_id,
                "exit": code,
                "wall_s": wall,
                "accuracy_s": accuracy_s(run_id) if run_id else None,
                "items_answered": items_answered(run_id) if run_id else None,
            }
        )
        state.setdefault("real", []).append(rows[-1])
        save_state(state)
    return {"alternated": rows}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phases", default="full,replay,race", help="comma-separated phases")
    ap.add_argument("--run", help="use this stored run as the full run")
    ap.add_argument("--models", nargs="+", default=VARIANTS)
    ap.add_argument("--suite", default="offline")
    ap.add_argument("--limit", type=int, help="the first N items per task (a smaller run)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--threads",
        type=int,
        help="llama.cpp threads (default: the bench's). On a shared machine 1 keeps the "
        "figures steady: with a thread per core, every other process stalls the threads' "
        "barriers",
    )
    ap.add_argument("--replays", type=int, default=1000)
    ap.add_argument(
        "--alternate",
        choices=["race,full", "race"],
        default="race,full",
        help="the race phase: a race then a full run (default), or the race alone against "
        "the full run phase 1 measured just before (half the time)",
    )
    ap.add_argument(
        "--race-by",
        choices=["capability_per_gb", "capability"],
        help="the real race's ranking question (bench --race-by; default: the bench's)",
    )
    ap.add_argument(
        "--margins",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.0],
        help="race margins (capability points) to replay at each level, e.g. 0,2",
    )
    ap.add_argument(
        "--levels", type=lambda s: [float(x) for x in s.split(",")], default=[0.95, 0.9, 0.99]
    )
    args = ap.parse_args(argv)
    phases = args.phases.split(",")
    state = load_state(args) if not args.run else {"full_run": args.run}
    state["path"] = str(state_path(args) if not args.run else out_dir() / "state-given-run.json")
    result: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    run_id = phase_full(args, state) if "full" in phases else (args.run or state.get("full_run"))
    result["full_run"] = run_id
    if "replay" in phases and run_id is None:
        raise SystemExit("[replay] no full run: run the full phase first, or give --run RUN")
    if "replay" in phases:
        result |= phase_replay(args, run_id)
    if "race" in phases:
        result["real_race"] = phase_race(args, state)
    path = out_dir() / (time.strftime("%Y%m%d-%H%M%S") + ".json")
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
