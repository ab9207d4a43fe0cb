"""Fidelity per context knob point (issue 23): the variant's pass runs with the point's KV cache
types, flash attention and windowing (the reference's with F16 KV, flash attention off), each
result records its point, the store keeps one result per point, and the report puts each
point's KLD on that point's row ("q4 + KV q8_0")."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest

from edgeeval import contracts as ct
from edgeeval import records as rec
from edgeeval.catalog.models import Catalog, Variant
from edgeeval.cli.main import build_parser
from edgeeval.cli.quant import knob_settings
from edgeeval.errors import ConfigError
from edgeeval.fidelity import child
from edgeeval.fidelity import orchestrate as orch
from edgeeval.fidelity.kld import TokenStats
from edgeeval.report.fidelity import label_fidelity
from edgeeval.report.render import render_run
from edgeeval.store import database
from edgeeval.store.fidelity import load_fidelity, save_fidelity
from tests.test_knob_rows import save_sweep

KLD = {"f16": 0.0004, "q8_0": 0.0021, "q4_0": 0.0930}


def result(kind: str, *, flash_attn: bool | str = True, run_id: str = "r1") -> rec.FidelityResult:
    return rec.FidelityResult(
        run_id=run_id,
        variant="q4",
        reference="q4",
        status=rec.STATUS_OK,
        corpus="pydoc",
        corpus_sha256="c" * 64,
        n_ctx=512,
        n_chunks=4,
        n_tokens=1020,
        ppl=10.0,
        ppl_se=0.1,
        ln_ppl_ratio=KLD[kind] / 2,
        ln_ppl_ratio_se=0.001,
        kld_mean=KLD[kind],
        kld_se=KLD[kind] / 10,
        kld_max=1.0,
        kld_p999=0.5,
        kld_p99=0.1,
        kld_p90=0.01,
        kld_median=0.001,
        same_top_pct=99.0,
        same_top_se_pct=0.1,
        rms_dp_pct=1.0,
        rms_dp_se_pct=0.1,
        cache_type_k=kind,
        cache_type_v=kind,
        flash_attn=flash_attn,
    )


def test_a_result_is_named_by_its_knob_point_and_older_results_keep_their_name():
    assert result("q8_0").point_name == "q4 + KV q8_0 + FA on"
    assert result("f16", flash_attn=False).point_name == "q4"
    old = json.loads(rec.to_json(result("f16", flash_attn=False)))
    for key in ("cache_type_k", "cache_type_v", "flash_attn", "swa_full"):
        del old[key]  # a line stored before knob points
    back = rec.from_dict(rec.FidelityResult, old)
    assert (back.cache_type_k, back.flash_attn, back.swa_full) == ("f16", False, True)
    assert back.point_name == "q4"


def test_the_store_keeps_one_result_per_knob_point(tmp_path):
    for kind in KLD:
        save_fidelity(result(kind), tmp_path)
    save_fidelity(dataclasses.replace(result("q8_0"), kld_mean=0.0022), tmp_path)  # a rerun
    loaded = {r.point_name: r.kld_mean for r in load_fidelity("r1", tmp_path)}
    assert loaded == {
        "q4 + FA on": KLD["f16"],
        "q4 + KV q8_0 + FA on": 0.0022,
        "q4 + KV q4_0 + FA on": KLD["q4_0"],
    }
    with sqlite3.connect(tmp_path / database.DB_NAME) as db:
        rows = db.execute("SELECT variant FROM fidelity ORDER BY variant").fetchall()
    assert [v for (v,) in rows] == ["q4 + FA on", "q4 + KV q4_0 + FA on", "q4 + KV q8_0 + FA on"]
    held = database.held(tmp_path, "r1")  # what `edgeeval repair` compares the JSONL with
    assert set(held.fidelity) == {database.fidelity_key(r) for r in load_fidelity("r1", tmp_path)}


def test_each_knob_points_kld_is_on_its_own_row(tmp_path):
    save_sweep(tmp_path)  # q4 at f16 / q8_0 / q4_0, n_ctx 8192, -fa on
    for kind in KLD:
        save_fidelity(result(kind), tmp_path)
    _, _, paths = render_run("r1", root=tmp_path)
    text = paths["md"].read_text()
    table = text[text.index("## Variants: size") :]
    for name, kind in (("q4", "f16"), ("q4 + KV q8_0", "q8_0"), ("q4 + KV q4_0", "q4_0")):
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert f"{KLD[kind]:.5f} ± {KLD[kind] / 10:.5f}" in row, row


def test_a_result_at_other_knobs_than_the_row_is_not_shown_as_the_rows(tmp_path):
    records = save_sweep(tmp_path)
    plain = result("f16", flash_attn=False)  # F16 KV, -fa off: no record of the run has it
    named = [r.variant for r in label_fidelity([plain, result("q8_0")], records)]
    assert named == ["q4 (measured at KV f16/f16, FA off)", "q4 + KV q8_0"]
    # a run without a knob sweep, at the defaults: the result keeps the variant's name
    alone = [dataclasses.replace(records[0], settings=rec.RunSettings())]
    assert [r.variant for r in label_fidelity([plain], alone)] == ["q4"]


def _args(*argv: str):
    return build_parser().parse_args(["fidelity", "q4", *argv])


def test_the_command_line_gives_the_knob_points_and_refuses_what_llama_cpp_refuses():
    points = knob_settings(_args("--cache-type", "f16,q8_0,q4_0", "-fa", "on"), 0)
    assert [(p.cache_type_k, p.cache_type_v, p.flash_attn) for p in points] == [
        ("f16", "f16", True),
        ("q8_0", "q8_0", True),
        ("q4_0", "q4_0", True),
    ]
    assert [(p.cache_type_k, p.flash_attn) for p in knob_settings(_args(), 0)] == [("f16", False)]
    with pytest.raises(ConfigError, match="--cache-type-v q8_0 needs flash attention"):
        knob_settings(_args("-ctv", "q8_0"), 0)


class _Passes:
    """orchestrate._run_pass without a model: records each pass's spec, writes what a pass
    would (the reference's meta, the variant's token statistics: KLD 0.01 per token for every
    quantized KV point, 0 for F16)."""

    def __init__(self) -> None:
        self.specs: list[ct.FidelitySpec] = []

    def __call__(self, spec, name, timeout_s, progress):
        self.specs.append(spec)
        if spec.role == "reference":
            meta = ct.FidelityPassResult(n_vocab=8, n_chunks=1, n_corpus_tokens=600)
            ct.write_contract(Path(spec.work) / child.META, meta)
        else:
            n, kld = 255, 0.0 if spec.cache_type_k == "f16" else 0.01
            stats = TokenStats(
                nll=np.ones(n), nll_ref=np.ones(n), kld=np.full(n, kld),
                p_diff=np.zeros(n), same_top=np.ones(n, bool),
            )  # fmt: skip
            np.savez(spec.out, **dataclasses.asdict(stats))
        return 1.0, ""


def test_the_variants_pass_takes_the_points_knobs_and_the_reference_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEEVAL_HOME", str(tmp_path / "home"))
    variant = cast(Variant, SimpleNamespace(name="q4"))  # run_fidelity reads its name only
    passes = _Passes()
    fake_file = type("F", (), {"path": tmp_path / "m.gguf", "sha256": "s" * 64})
    monkeypatch.setattr(orch, "ensure_file", lambda v, c, progress: fake_file)
    monkeypatch.setattr(orch, "_run_pass", passes)
    monkeypatch.setattr(orch, "_ref_bytes", lambda *a: 0)
    monkeypatch.setattr(orch, "_notes", lambda path: "")
    monkeypatch.setattr(orch, "save_fidelity", lambda r: None)
    points = knob_settings(_args("--cache-type", "f16,q4_0", "-fa", "on"), 0)
    corpus = orch.Corpus("text", "x" * 2000, "c" * 64)
    results = orch.run_fidelity(
        variant, [variant], Catalog("c.yaml", {}), corpus=corpus, run_id="r1", points=points
    )
    ref, *candidates = passes.specs
    assert (ref.role, ref.cache_type_k, ref.cache_type_v, ref.flash_attn) == (
        "reference", "f16", "f16", False,
    )  # fmt: skip
    assert [(s.cache_type_k, s.cache_type_v, s.flash_attn) for s in candidates] == [
        ("f16", "f16", True),
        ("q4_0", "q4_0", True),
    ]
    assert [(r.point_name, r.kld_mean) for r in results] == [
        ("q4 + FA on", 0.0),
        ("q4 + KV q4_0 + FA on", pytest.approx(0.01)),
    ]


def test_the_child_loads_the_model_with_the_specs_knobs(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(child, "check_gguf", lambda path: None)
    monkeypatch.setattr(child, "LlamaBackend", lambda path, options: seen.append(options))
    spec = ct.FidelitySpec(
        role="variant", model="m.gguf", work=str(tmp_path), n_ctx=512, max_chunks=1,
        n_threads=1, n_gpu_layers=0, out="o.npz", cache_type_k="q8_0", cache_type_v="q4_0",
        flash_attn=True, swa_full=False,
    )  # fmt: skip
    child._load(spec)
    (options,) = seen
    assert (options.type_k, options.type_v, options.flash_attn, options.swa_full) == (
        "q8_0", "q4_0", True, False,
    )  # fmt: skip
    assert (options.n_ctx, options.n_batch) == (512, 512)
