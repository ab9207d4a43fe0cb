"""The Python API for notebooks and scripts: `edgeeval.bench(...)` and `edgeeval.load_run(...)`.

    import edgeeval
    outcome = edgeeval.bench(["./model.gguf", "hf:Qwen/Qwen3-0.6B-GGUF:Q8_0"], reps=3, limit=20)
    run = edgeeval.load_run("latest")
    run.records           # list of edgeeval.records.ModelRecord
    run.rows              # the ranking (edgeeval.report.summarize.RankRow), best first
    run.dataframe()       # the ranking as a pandas DataFrame (needs pandas)

Models are named as on the command line: catalog names, set names, or model specs (a .gguf
path, `hf:owner/repo:QUANT`, `ollama:name:tag`, `lmstudio:publisher/repo`). Settings are the
fields of `edgeeval.records.RunSettings`, plus the CLI's short names (`reps`, `pp`, `tg`,
`limit`, `timeout`). Progress lines go to `progress` (default: discarded); nothing is printed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeeval import records as rec
from edgeeval.errors import EdgeevalError
from edgeeval.text import Progress

if TYPE_CHECKING:  # imported when used: `import edgeeval` stays light
    from edgeeval.pipeline import BenchOutcome
    from edgeeval.report.summarize import RankRow

#: CLI option names accepted as aliases of RunSettings fields.
ALIASES = {
    "reps": "repetitions",
    "pp": "pp_tokens",
    "tg": "tg_tokens",
    "limit": "task_limit",
    "timeout": "timeout_s",
    "stall_timeout": "stall_timeout_s",
    "threads": "n_threads",
}


def _quiet(_: str) -> None:
    return None


def run_settings(**options: Any) -> rec.RunSettings:
    """RunSettings from keyword options (field names or ALIASES); n_gpu_layers defaults to all
    layers when llama.cpp can offload to a GPU, else 0. TypeError names an unknown option."""
    fields = {f.name for f in dataclasses.fields(rec.RunSettings)}
    values: dict[str, Any] = {}
    for key, value in options.items():
        name = ALIASES.get(key, key)
        if name not in fields:
            known = ", ".join(sorted(fields | set(ALIASES)))
            raise TypeError(f"unknown bench option {key!r}; known: {known}")
        values[name] = tuple(value) if isinstance(value, list) else value
    if "n_gpu_layers" not in values:
        from edgeeval.engine.backend import library_info
        from edgeeval.engine.doctor import default_n_gpu_layers

        values["n_gpu_layers"] = default_n_gpu_layers(library_info())
    settings = rec.RunSettings(**values)
    return dataclasses.replace(settings, n_ubatch=min(settings.n_ubatch, settings.n_batch))


def bench(
    models: str | Sequence[str] | None = None,
    *,
    catalog: str | Path | None = None,
    run_id: str | None = None,
    budget_gb: float | None = None,
    force: bool = False,
    progress: Progress = _quiet,
    **options: Any,
) -> BenchOutcome:
    """Measure `models` (default: the default set) and write the report, as `edgeeval bench`
    does; `catalog` adds a models.yaml to the built-in one. Returns the pipeline's BenchOutcome
    (run_id, records, rows, paths of the report files)."""
    from edgeeval.catalog.stack import load_catalogs
    from edgeeval.fetch.specs import select
    from edgeeval.pipeline import bench as run_bench

    names = [models] if isinstance(models, str) else list(models or [])
    merged, variants = select(load_catalogs(catalog), names, progress=progress)
    return run_bench(
        variants,
        run_settings(**options),
        run_id=run_id,
        force=force,
        budget_gb=budget_gb,
        progress=progress,
        catalog=merged,
    )


@dataclass(frozen=True)
class Run:
    """A stored run: its records and its ranking."""

    run_id: str
    records: list[rec.ModelRecord]
    rows: list[RankRow] = field(default_factory=list)

    def dataframe(self) -> Any:
        """The ranking as a pandas DataFrame, one row per variant (task accuracies as
        `acc:<task>` columns). Raises EdgeevalError saying how to install pandas."""
        try:
            import pandas
        except ImportError:
            raise EdgeevalError(
                "Run.dataframe() needs pandas: pip install pandas (run.records and run.rows "
                "work without it)"
            ) from None
        flat = []
        for row in self.rows:
            data = dataclasses.asdict(row)
            accs = data.pop("task_acc")
            data.pop("task_acc_se")
            data.pop("paired_se", None)  # a mapping per row: in the report's comparisons
            data["tied_with"] = ", ".join(data["tied_with"])
            data.update({f"acc:{task}": acc for task, acc in sorted(accs.items())})
            flat.append(data)
        return pandas.DataFrame(flat)


def load_run(run: str = "latest", *, budget_gb: float | None = None) -> Run:
    """The stored run `run` (an id, a run directory or "latest"), ranked within `budget_gb`
    with the report's paired SEs where the items are shared; reads the store only (loads no
    model, writes nothing)."""
    from edgeeval.report.paired import load_pairing, paired_ses, pairing
    from edgeeval.report.render import relabelled_items
    from edgeeval.report.summarize import label_knob_points, rank_rows
    from edgeeval.store import runs as store

    run_id, root = store.locate_run(run)  # a run directory is read where it is
    stored = list(store.load_records(run_id, root))
    records = label_knob_points(stored)  # a variant x knob point is its own row, as the report's
    items = load_pairing(run_id, store.run_dir(run_id).parent, stored)
    pairs = pairing(records, relabelled_items(items, stored, records))
    rows = rank_rows(records, budget_gb=budget_gb, paired=paired_ses(pairs))
    return Run(run_id=run_id, records=records, rows=rows)
