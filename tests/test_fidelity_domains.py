"""Per-domain fidelity (`--corpus domains`): the shipped corpus, its rendering through a chat
template, the split of token statistics by domain, the report's domain table, and real runs on
a tiny model the tests write."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from edgeeval import records as rec
from edgeeval.catalog.models import load_catalog
from edgeeval.errors import EdgeevalError
from edgeeval.fidelity import domains as dom
from edgeeval.fidelity import orchestrate as f
from edgeeval.fidelity.kld import TokenStats, summarize
from edgeeval.report.fidelity import fidelity_markdown
from edgeeval.sandbox.template import ChatTemplate, render_chats
from edgeeval.store.fidelity import load_fidelity
from tests.test_chat import CHATML
from tests.test_quantize import tiny_catalog, write_tiny_llama

# --- the shipped corpus ---


def test_the_shipped_corpus_has_every_domain_and_renders_through_a_chat_template():
    samples = dom.load_samples(dom.DOMAINS)
    assert {s.domain for s in samples} == set(dom.DOMAINS)
    assert all(s.source and s.messages for s in samples)
    texts = render_chats(
        ChatTemplate(CHATML), [list(s.messages) for s in samples], add_generation_prompt=False
    )
    for sample, text in zip(samples, texts, strict=True):
        assert text.startswith("<|im_start|>" + sample.messages[0]["role"])
        assert all(m["content"] in text for m in sample.messages)  # nothing dropped
    tool = next(s for s in samples if s.domain == "tool_calls")
    call = tool.messages[2]["content"].split("\n")[1]
    assert json.loads(call)["name"] == "get_weather"  # a JSON tool call, parsed back
    scripts = "".join(m["content"] for s in samples if s.domain == "non_latin" for m in s.messages)
    for first, last in ((0x4E00, 0x9FFF), (0x0400, 0x04FF), (0x0600, 0x06FF), (0x0900, 0x097F)):
        assert any(first <= ord(c) <= last for c in scripts)  # Chinese, Cyrillic, Arabic, Hindi


def test_the_shipped_corpus_is_what_its_script_builds():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    built = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "build_fidelity_domains.py")],
        capture_output=True,
        check=True,
    ).stdout
    assert built == dom.corpus_path().read_bytes()


def test_domain_specs_and_an_unknown_domain_lists_the_known_ones(monkeypatch):
    monkeypatch.setenv("EDGEEVAL_OFFLINE", "1")  # the Hub's samples: from the cache only
    assert dom.parse_spec("domains") == dom.DOMAINS
    assert dom.parse_spec("domains:chat,code,chat") == ("chat", "code")
    with pytest.raises(EdgeevalError, match="known domains: code, chat, tool_calls"):
        dom.parse_spec("domains:code,emoji")
    with pytest.raises(EdgeevalError, match="known domains"):
        f.load_corpus("domains:poetry")
    corpus = f.load_corpus("domains:code")
    assert corpus.name == "domains:code" and corpus.domains == ("code",)
    assert {s.domain for s in corpus.samples} == {"code"} and len(corpus.sha256) == 64
    whole = f.load_corpus("domains")
    assert whole.name == "domains" and {s.domain for s in whole.samples} == set(dom.DOMAINS)
    sources = dict(whole.sources)
    assert sources["code"] == "Python 3.11 docs (pydoc_data.topics), PSF License v2"
    assert sources["chat"].startswith("shipped: written for edgeeval (project licence)")
    assert "HuggingFaceH4/ultrachat_200k" in sources["chat"] and "not reachable" in sources["chat"]
    assert f.load_corpus("pydoc").domains == ()  # the default corpus is unchanged


def test_a_broken_corpus_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"domain": "chat", "id": "a", "source": "x", "messages": []}\n{"domain"\n')
    with pytest.raises(EdgeevalError, match=r"c.jsonl, line 2"):
        dom.load_samples(dom.DOMAINS, path)


# --- splitting statistics by domain ---


def _stats(n: int, seed: int) -> TokenStats:
    rng = np.random.default_rng(seed)
    nll_ref = rng.uniform(0.5, 4, n)
    return TokenStats(
        nll=nll_ref + rng.normal(0, 0.1, n),
        nll_ref=nll_ref,
        kld=rng.exponential(0.02, n),
        p_diff=rng.normal(0, 0.03, n),
        same_top=rng.random(n) < 0.9,
    )


def test_domain_statistics_add_up_to_the_overall_ones_weighted_by_tokens():
    labels = ["code", "code", "chat", "long_doc", "code"]  # chunks, 7 scored tokens each
    stats = _stats(5 * 7, seed=3)
    parts = dom.by_domain(stats, labels, dom.DOMAINS, {"tool_calls": "12 tokens, fewer"})
    whole = summarize(stats)
    ok = [d for d in parts if d.status == rec.STATUS_OK]
    assert [d.domain for d in ok] == ["code", "chat", "long_doc"]
    assert [(d.n_tokens, d.n_chunks) for d in ok] == [(21, 3), (7, 1), (7, 1)]
    assert sum(d.n_tokens for d in ok) == whole["n_tokens"]
    weighted = sum(d.n_tokens * d.kld_mean for d in ok) / whole["n_tokens"]
    assert weighted == pytest.approx(whole["kld_mean"], rel=1e-12)
    same = sum(d.n_tokens * d.same_top_pct for d in ok) / whole["n_tokens"]
    assert same == pytest.approx(whole["same_top_pct"], rel=1e-12)
    ratio = sum(d.n_tokens * d.ln_ppl_ratio for d in ok) / whole["n_tokens"]
    assert ratio == pytest.approx(whole["ln_ppl_ratio"], rel=1e-12)
    # the code domain is exactly its chunks' tokens (chunks 0, 1 and 4)
    code = np.r_[0:14, 28:35]
    assert ok[0].kld_mean == pytest.approx(float(stats.kld[code].mean()))
    assert ok[0].kld_se > 0 and ok[0].same_top_se_pct is not None
    missing = {d.domain: d for d in parts if d.status == "missing"}
    assert set(missing) == {"tool_calls", "non_latin"}
    assert (
        missing["tool_calls"].note == "12 tokens, fewer" and missing["tool_calls"].kld_mean is None
    )
    assert missing["non_latin"].n_tokens == 0 and missing["non_latin"].same_top_pct is None


def test_statistics_that_do_not_split_into_the_chunks_are_refused():
    with pytest.raises(ValueError, match="do not split"):
        dom.by_domain(_stats(10, 1), ["code", "chat", "code"], dom.DOMAINS, {})


# --- the report ---


def _result(variant: str, kld: float, domains: dict[str, float | None]) -> rec.FidelityResult:
    parts = tuple(
        rec.DomainFidelity(d, "missing", note="too short")
        if v is None
        else rec.DomainFidelity(
            d,
            rec.STATUS_OK,
            n_tokens=255,
            kld_mean=v,
            kld_se=v / 10,
            same_top_pct=95.0,
            same_top_se_pct=1.0,
        )  # fmt: skip
        for d, v in domains.items()
    )
    return rec.FidelityResult(
        run_id="r", variant=variant, reference="ref", status=rec.STATUS_OK, corpus="domains",
        corpus_sha256="a" * 64, n_ctx=512, n_chunks=4, n_tokens=1020, kld_mean=kld, kld_se=0.001,
        ppl=10, ppl_se=0.1, ln_ppl_ratio=0.01, ln_ppl_ratio_se=0.001, kld_p999=1, kld_p99=0.5,
        kld_p90=0.1, kld_median=0.01, same_top_pct=95, same_top_se_pct=1, rms_dp_pct=2,
        rms_dp_se_pct=0.1, domains=parts,
    )  # fmt: skip


def test_the_domain_table_shows_missing_domains_and_order_changes():
    q8 = _result("v-q8", 0.01, {"code": 0.005, "chat": 0.02, "tool_calls": None})
    q4 = _result("v-q4", 0.05, {"code": 0.06, "chat": 0.01, "tool_calls": 0.03})
    old = _result("v-old", 0.02, {})  # measured before domains, or on another corpus
    text = fidelity_markdown([q8, q4, old])
    table = text[text.index("### Fidelity per domain") :]
    assert "| code | 255 | 0.00500 ± 0.00050 · 95.0 ± 1.0 % | 0.06000 ± 0.00600" in table
    assert "| tool_calls | 255 | missing | 0.03000 ± 0.00300 · 95.0 ± 1.0 % | missing |" in table
    assert "- tool_calls: missing for v-q8: too short" in table
    assert "- chat: v-q4 < v-q8 (overall: v-q8 < v-q4)" in table
    assert "- code: v-" not in table  # same order as overall
    assert "- code: missing for v-old: not measured on this domain" in table
    assert "0.00000" not in table  # missing is never shown as 0
    rerun = rec.from_dict(rec.FidelityResult, json.loads(rec.to_json(q8)))
    assert rerun == q8  # the domains survive the JSONL round trip
    assert "per domain" not in fidelity_markdown([old])  # no table without domains


# --- real runs on a tiny model ---


def _tiny(tmp_path: Path, template: str | None) -> Path:
    model = write_tiny_llama(tmp_path / "tiny.gguf", seed=1, chat_template=template)
    recipes = {"q8": {"ftype": "Q8_0", "pure": True}, "q4": {"ftype": "Q4_0", "pure": True}}
    return tiny_catalog(tmp_path, model, recipes, {"t-q8": "q8", "t-q4": "q4"})


def _corpus_file(tmp_path: Path) -> Path:
    """The shipped samples, with chat cut to one short exchange (less than a chunk)."""
    lines = [s for s in dom.corpus_path().read_text(encoding="utf-8").splitlines() if s]
    keep = [line for line in lines if json.loads(line)["domain"] != "chat"]
    short = {"domain": "chat", "id": "c", "source": "test", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}  # fmt: skip
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(keep + [json.dumps(short)]) + "\n", encoding="utf-8")
    return path


@pytest.mark.llama
def test_a_per_domain_run_on_a_tiny_model(tmp_path):
    catalog = load_catalog(_tiny(tmp_path, CHATML))
    corpus = f.domain_corpus(dom.DOMAINS, _corpus_file(tmp_path), hub=())  # shipped only
    results = f.run_fidelity(
        catalog.get("tiny-f32"),
        [catalog.get("tiny-f32"), catalog.get("t-q8"), catalog.get("t-q4")],
        catalog,
        corpus=corpus,
        run_id="rd",
        n_ctx=128,
        max_chunks=3,
        n_threads=1,
    )
    same, q8, q4 = results
    for r in results:
        assert r.status == rec.STATUS_OK, r.error
        assert [d.domain for d in r.domains] == list(dom.DOMAINS)
        ok = [d for d in r.domains if d.status == rec.STATUS_OK]
        assert sum(d.n_tokens for d in ok) == r.n_tokens == r.n_chunks * 63
        assert sum(d.n_tokens * d.kld_mean for d in ok) / r.n_tokens == pytest.approx(
            r.kld_mean, rel=1e-9
        )
        assert sum(d.n_tokens * d.same_top_pct for d in ok) / r.n_tokens == pytest.approx(
            r.same_top_pct, rel=1e-9
        )
        chat = r.domains[1]
        assert chat.status == "missing" and "fewer than one chunk of 128" in chat.note
        assert chat.kld_mean is None
        assert all(d.n_chunks == 3 for d in ok)  # at most --chunks per domain
    assert all(abs(d.kld_mean) < 1e-4 for d in same.domains if d.kld_mean is not None)
    for d8, d4 in zip(q8.domains, q4.domains, strict=True):
        if d8.kld_mean is not None:
            assert 0 < d8.kld_mean < d4.kld_mean, d8.domain  # fewer bits, larger KLD
    stored = {r.variant: r for r in load_fidelity("rd")}
    assert stored["t-q4"].domains == q4.domains  # the store keeps the domains
    assert q4.domains[0].source == "Python 3.11 docs (pydoc_data.topics), PSF License v2"
    table = fidelity_markdown(results)
    assert (
        "### Fidelity per domain" in table and "| chat | - | missing | missing | missing |" in table
    )
    assert not math.isnan(q4.domains[0].kld_se)
    assert "Samples per domain, from:\n\n- code: Python 3.11 docs" in table


@pytest.mark.llama
def test_a_reference_without_a_chat_template_stops_with_the_reason(tmp_path):
    catalog = load_catalog(_tiny(tmp_path, None))
    with pytest.raises(EdgeevalError, match="has no chat template"):
        f.run_fidelity(
            catalog.get("tiny-f32"),
            [catalog.get("t-q8")],
            catalog,
            corpus=f.domain_corpus(("code",)),
            run_id="rn",
            n_ctx=128,
            max_chunks=1,
            n_threads=1,
        )


# --- chat and tool calls from the Hub, when it is reachable ---

ULTRACHAT, HERMES = dom.HUB_SOURCES
CHAT_ROWS = [
    {"prompt": "empty", "prompt_id": "0", "messages": []},  # no conversation: skipped
    *(
        {
            "prompt": f"Question {i}?",
            "prompt_id": str(i),
            "messages": [
                {"role": "user", "content": f"Question {i}: how do tides work?"},
                {"role": "assistant", "content": f"Answer {i}: the Moon pulls the oceans."},
            ],
        }
        for i in range(1, 21)
    ),
]
TOOL_ROWS = [
    {
        "id": f"t{i}",
        "conversations": [
            {"from": "system", "value": "<tools>[{\"name\": \"get_stock\"}]</tools>"},
            {"from": "human", "value": f"What is the price of stock {i}?"},
            {"from": "gpt", "value": "<tool_call>\n" + json.dumps(
                {"name": "get_stock", "arguments": {"n": i}}) + "\n</tool_call>"},
        ],
    }
    for i in range(3)
]  # fmt: skip


def _parquet(rows: list[dict]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


def _publish(hub, chat=None, tools=None) -> tuple[str, str]:
    chat_commit = hub.add_file(
        ULTRACHAT.repo_id,
        ULTRACHAT.filename,
        _parquet(CHAT_ROWS) if chat is None else chat,
        revision=ULTRACHAT.revision,
        repo_type="dataset",
    )
    tool_commit = hub.add_file(
        HERMES.repo_id,
        HERMES.filename,
        json.dumps(TOOL_ROWS).encode() if tools is None else tools,
        revision=HERMES.revision,
        repo_type="dataset",
    )
    return chat_commit, tool_commit


def test_chat_and_tool_calls_come_from_the_hub_when_it_is_reachable(fake_hub):
    chat_commit, tool_commit = _publish(fake_hub)
    corpus = f.load_corpus("domains")
    chat = [s for s in corpus.samples if s.domain == "chat"]
    tools = [s for s in corpus.samples if s.domain == "tool_calls"]
    assert len(chat) == ULTRACHAT.take == 16  # the first 16 rows holding a conversation
    assert chat[0].messages[0] == {"role": "user", "content": "Question 1: how do tides work?"}
    assert [len(s.messages) for s in tools] == [3, 3, 3]
    assert [m["role"] for m in tools[0].messages] == ["system", "user", "assistant"]
    assert '"name": "get_stock"' in tools[0].messages[2]["content"]
    sources = dict(corpus.sources)
    assert sources["chat"].startswith("Hub dataset HuggingFaceH4/ultrachat_200k, data/test_sft")
    assert "(MIT)" in sources["chat"]
    assert "(Apache-2.0), revision " + tool_commit[:12] in sources["tool_calls"]
    assert sources["code"] == "Python 3.11 docs (pydoc_data.topics), PSF License v2"
    assert [s.domain for s in corpus.samples] == sorted(
        (s.domain for s in corpus.samples), key=dom.DOMAINS.index
    )  # report order kept
    offline = f.domain_corpus(dom.DOMAINS, hub=())
    assert offline.sha256 != corpus.sha256  # another text, another corpus hash
    texts = render_chats(ChatTemplate(CHATML), [list(s.messages) for s in tools])
    assert "<|im_start|>assistant\n<tool_call>" in texts[0]


def test_an_unreachable_hub_or_a_file_of_another_shape_leaves_the_shipped_samples(
    fake_hub, monkeypatch
):
    import socket

    _publish(fake_hub, tools=json.dumps({"not": "a list"}).encode())
    corpus = f.load_corpus("domains:chat,tool_calls")
    sources = dict(corpus.sources)
    assert sources["chat"].startswith("Hub dataset")  # the chat file is fine
    assert sources["tool_calls"].startswith("shipped: written for edgeeval")
    assert "not usable" in sources["tool_calls"] and "a JSON list of rows" in sources["tool_calls"]
    shipped = [s for s in dom.load_samples(("tool_calls",))]
    assert [s for s in corpus.samples if s.domain == "tool_calls"] == shipped
    with socket.socket() as sock:  # a loopback port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", dead)
    monkeypatch.setenv("EDGEEVAL_HOME", str(Path(os.environ["EDGEEVAL_HOME"]) / "empty"))
    corpus = f.load_corpus("domains:chat")
    [(domain, source)] = corpus.sources
    assert domain == "chat" and "not reachable" in source and dead in source
    assert corpus.samples == tuple(dom.load_samples(("chat",)))


def test_hub_rows_become_conversations_only_when_they_hold_one(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(
        json.dumps({"conversations": [{"from": "human", "value": "hi"}]}) + "\n"  # no answer
        + json.dumps({"conversations": [{"from": "human", "value": 3}]}) + "\n"  # not text
        + json.dumps({"conversations": [{"from": "human", "value": "hi"},
                                        {"from": "gpt", "value": "hello"}]}) + "\n"
    )  # fmt: skip
    [sample] = dom.hub_samples(HERMES, path)
    assert sample.messages == (
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    )
    assert sample.id == "hub-tool_calls-2" and "revision main" in sample.source
    with pytest.raises(ValueError, match="no row holds a conversation in the 'messages' format"):
        dom.hub_samples(ULTRACHAT, path)
