"""Progress with a rate and an ETA (issue 22 part 3): cli/progress.py's renderer on fake
events (arithmetic, the plain-line cadence off a terminal, --quiet, NO_COLOR, TERM=dumb), and
the worker's items events on the fake backend."""

from __future__ import annotations

import io
import json

from edgeeval.cli.progress import ProgressPrinter, TaskState, bar_wanted, clock_text, colour_allowed
from edgeeval.engine.process import Event
from edgeeval.run import worker
from edgeeval.run.accuracy import score_tasks
from tests.test_accuracy import CHATML, SETTINGS, ByPrompt, gen_task, mc_task


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _items(done, planned, fresh, seconds, task="arith"):
    return Event("items", task=task, done=done, planned=planned, fresh=fresh, seconds=seconds)


def test_rate_and_eta_arithmetic():
    st = TaskState("m", "arith", planned=40, done=16, fresh=16, seconds=8.0, at=50.0)
    assert st.rate() == 2.0
    assert st.eta(50.0) == 12.0  # 24 left at 2 items/s
    assert st.eta(55.0) == 7.0  # counted down between events
    assert st.eta(90.0) == 0.0  # never negative
    # a resumed task: 10 earlier items are done, not speed; 6 fresh ones in 12 s
    resumed = TaskState("m", "arith", planned=40, done=16, fresh=6, seconds=12.0, at=0.0)
    assert resumed.rate() == 0.5 and resumed.eta(0.0) == 48.0
    assert TaskState("m", "arith", planned=40).rate() is None
    assert "ETA ?" in TaskState("m", "arith", planned=40).line(0.0)
    assert "16/40 items, 2.00 items/s, ETA 0:12" in st.line(50.0)
    assert "0.5 items/s" not in resumed.line(0.0) and "2.0 s/item" in resumed.line(0.0)
    assert clock_text(3725) == "1:02:05" and clock_text(65) == "1:05" and clock_text(None) == "?"


def test_plain_lines_at_least_every_10_s_while_a_task_is_scored():
    out, clock = io.StringIO(), Clock()
    p = ProgressPrinter(out, bar=False, clock=clock, stamp=lambda: "T")
    p.event("m", Event("task", task="arith", index=1, total=1))
    clock.now += 10  # before the first chunk: what is known, still every 10 s
    p.tick()
    assert out.getvalue() == "[T] m: arith: 0/? items, rate ?, ETA ? (elapsed 0:10)\n"
    out.truncate(0), out.seek(0)
    p.event("m", _items(16, 40, 16, 8.0))
    assert out.getvalue().splitlines() == [
        "[T] m: arith: 16/40 items, 2.00 items/s, ETA 0:12 (elapsed 0:08)"
    ]
    clock.now += 9.9
    p.tick()
    assert len(out.getvalue().splitlines()) == 1  # nothing new before 10 s
    clock.now += 0.1
    p.tick()
    lines = out.getvalue().splitlines()
    assert lines[-1] == "[T] m: arith: 16/40 items, 2.00 items/s, ETA 0:02 (elapsed 0:18)"
    p("m: something else")  # any line restarts the 10 s
    clock.now += 5
    p.tick()
    assert len(out.getvalue().splitlines()) == 3
    p.event("m", _items(40, 40, 40, 20.0))  # the task's last items end its progress
    clock.now += 60
    p.tick()
    assert out.getvalue().splitlines()[-1].startswith("[T] m: arith: 40/40 items")
    assert len(out.getvalue().splitlines()) == 4
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    out.truncate(0), out.seek(0)
    p.event("m", Event("task", task="humaneval", index=1, total=1, planned=164))
    clock.now += 10  # the worker named the items it plans: shown before the first chunk
    p.tick()
    assert out.getvalue() == "[T] m: humaneval: 0/164 items, rate ?, ETA ? (elapsed 0:10)\n"


class FakeBar:
    made: list[FakeBar] = []

    def __init__(self, **kwargs):
        self.kwargs, self.n, self.postfix, self.refreshes, self.closed = kwargs, 0, "", 0, False
        self.written: list[str] = []
        self.updates: list[int] = []
        FakeBar.made.append(self)

    def update(self, k):
        self.updates.append(k)
        self.n += k

    def set_postfix_str(self, s, refresh=True):
        self.postfix = s

    def refresh(self):
        self.refreshes += 1

    def write(self, s, file=None):
        self.written.append(s)

    def close(self):
        self.closed = True


def test_a_bar_on_a_terminal_redrawn_every_tick_with_the_eta_counting_down():
    FakeBar.made.clear()
    out, clock = TTY(), Clock()
    p = ProgressPrinter(out, env={"TERM": "xterm"}, clock=clock, bar_factory=FakeBar)
    assert p.use_bar
    p.event("m", _items(16, 40, 16, 8.0))
    bar = FakeBar.made[0]
    assert (
        bar.kwargs["total"] == 40
        and bar.n == 16
        and bar.postfix == "2.00 items/s, ETA 0:12, elapsed 0:08"
    )
    clock.now += 3
    p.tick()
    assert bar.postfix == "2.00 items/s, ETA 0:09, elapsed 0:11" and bar.refreshes == 2
    p("m: a line")  # lines go above the bar
    assert bar.written == ["[" + bar.written[0][1:9] + "] m: a line"] and out.getvalue() == ""
    p.event("m", _items(40, 40, 40, 20.0))
    assert bar.n == 40 and bar.closed and p.state is None


def test_quiet_dumb_terminals_and_pipes_get_no_bar_and_no_colour():
    env = {"TERM": "xterm"}
    assert bar_wanted(TTY(), quiet=False, env=env)
    assert not bar_wanted(TTY(), quiet=True, env=env)  # --quiet
    assert not bar_wanted(TTY(), quiet=False, env={"TERM": "dumb"})
    assert not bar_wanted(io.StringIO(), quiet=False, env=env)  # not a terminal
    assert not bar_wanted(TTY(), quiet=False, env={**env, "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    assert not colour_allowed({"NO_COLOR": "1", "TERM": "xterm"})
    assert not colour_allowed({"TERM": "dumb"})
    assert colour_allowed({"TERM": "xterm", "NO_COLOR": ""})  # empty: not set (no-color.org)
    out = TTY()
    p = ProgressPrinter(out, quiet=True, env={"NO_COLOR": "1"}, stamp=lambda: "T")
    p.event("m", _items(4, 8, 4, 2.0))
    assert out.getvalue() == "[T] m: arith: 4/8 items, 2.00 items/s, ETA 0:02 (elapsed 0:02)\n"


def test_the_worker_emits_an_items_event_per_chunk_with_its_rate(capsys):
    tasks = [mc_task(7), gen_task(7)]
    got = worker._Measured()
    journal = worker._ItemJournal(SETTINGS, tasks, got, None)
    journal.planned_of = lambda name: 7  # type: ignore[method-assign]
    score_tasks(
        ByPrompt(liked=(" 5",), template=CHATML),
        tasks,
        SETTINGS,
        chunk_size=3,
        on_items=journal.on_items,
        on_task=journal.on_task,
    )
    events = [Event.from_line(line) for line in capsys.readouterr().out.splitlines()]
    starts = [e for e in events if e is not None and e.kind == "task"]
    assert [(e.task, e.index, e.total, e.planned) for e in starts] == [
        (t.name, i, 2, 7) for i, t in enumerate(tasks, 1)
    ]  # the items planned are known before the first chunk
    items = [e for e in events if e is not None and e.kind == "items"]
    assert [(e.task, e.done, e.planned) for e in items] == [
        (t.name, d, 7) for t in tasks for d in (3, 6, 7)
    ]
    assert all(e.fresh == e.done and e.seconds is not None and e.seconds >= 0 for e in items)
    # the printer renders them: a line per event off a terminal, done/planned and a rate
    out = io.StringIO()
    p = ProgressPrinter(out, bar=False, stamp=lambda: "T")
    for e in items:
        p.event("m", e)
    lines = out.getvalue().splitlines()
    assert len(lines) == 6 and lines[2].startswith(f"[T] m: {tasks[0].name}: 7/7 items, ")


def test_hashing_reports_bytes_as_a_bar_or_lines(tmp_path):
    from edgeeval.fetch.files import sha256_file
    from edgeeval.fetch.sources import verify_file

    path = tmp_path / "m.gguf"
    path.write_bytes(b"x" * (2 * (1 << 20) + 5))
    size = path.stat().st_size
    seen: list[tuple[int, int]] = []
    assert sha256_file(path, lambda d, t: seen.append((d, t))) == sha256_file(path)
    assert seen == [(1 << 20, size), (2 << 20, size), (size, size)]
    FakeBar.made.clear()
    printer = ProgressPrinter(TTY(), env={"TERM": "xterm"}, bar_factory=FakeBar)
    verify_file(
        path,
        size_bytes=size,
        sha256=None,
        remove_on_mismatch=False,
        on_bytes=lambda d, t: printer.bytes("m: sha256", d, t),
    )
    bar = FakeBar.made[0]
    assert bar.kwargs["total"] == size and bar.kwargs["unit"] == "B"
    assert bar.updates == [1 << 20, 1 << 20, 5] and bar.closed  # closed at the last byte
    out, clock = io.StringIO(), Clock()
    lines = ProgressPrinter(out, bar=False, clock=clock, stamp=lambda: "T")
    lines.bytes("m: sha256", 1 << 20, 3 << 20)  # within 10 s of the last line: nothing
    clock.now += 10
    lines.bytes("m: sha256", 2 << 20, 3 << 20)
    lines.bytes("m: sha256", 3 << 20, 3 << 20)
    assert out.getvalue().splitlines() == ["[T] m: sha256: 2 of 3 MB", "[T] m: sha256: 3 of 3 MB"]


def _events(capsys, kind):
    events = [Event.from_line(line) for line in capsys.readouterr().out.splitlines()]
    return [e for e in events if e is not None and e.kind == kind]


class _Batch(ByPrompt):
    """ByPrompt as the batch engine too (its generate_many / choice_logliks_many report each
    answer and every second question through on_done), closable like a BatchEngine."""

    def generate(self, prompt_tokens, *, max_tokens, stop=(), force=None):
        return super().generate(prompt_tokens, max_tokens=max_tokens, stop=stop)

    def close(self) -> None:
        self.calls.append(("close",))


def test_the_worker_reports_items_inside_a_chunk_and_journals_per_chunk(
    capsys, monkeypatch, tmp_path
):
    """A chunk of 7 generated answers (and of 7 questions, batched): scoring events as the
    answers come, before the chunk's one items event; the journal holds one line per chunk."""
    monkeypatch.setattr(worker, "SCORING_EVERY_S", 0.0)  # every report gets through
    for eval_batch in (1, 4):
        tasks = [gen_task(7), mc_task(7)]
        got = worker._Measured()
        journal = worker._ItemJournal(SETTINGS, tasks, got, None)
        journal.planned_of = lambda name: 7  # type: ignore[method-assign]
        fake = _Batch(liked=(" 5",), template=CHATML)
        monkeypatch.setattr("edgeeval.run.accuracy.engine_for", lambda *a, fake=fake: fake)
        path = tmp_path / f"journal-{eval_batch}.jsonl"
        got.journal = open(path, "a", encoding="utf-8")  # noqa: SIM115
        score_tasks(
            fake,
            tasks,
            SETTINGS,
            eval_batch=eval_batch,
            chunk_size=7,
            on_items=journal.on_items,
            on_task=journal.on_task,
            on_score=journal.on_score,
            on_progress=journal.on_progress,
        )
        events = [
            e
            for e in (Event.from_line(line) for line in capsys.readouterr().out.splitlines())
            if e is not None and e.kind in ("scoring", "items")
        ]
        seen = [(e.kind, e.task, e.done) for e in events]
        # generation: one report per answer, one at a time or from the batch's generate_many
        gen = [("scoring", "gen", d) for d in range(1, 8)] + [("items", "gen", 7)]
        # multiple choice: per question alone, per group of two from the fake batch scorer
        groups = range(1, 8) if eval_batch == 1 else (2, 4, 6, 7)
        mc = [("scoring", "mc", d) for d in groups] + [("items", "mc", 7)]
        assert seen == gen + mc, eval_batch
        assert all(e.planned == 7 and e.fresh == e.done for e in events)
        assert all(e.seconds is not None and e.seconds >= 0 for e in events)
        # scoring events are not journalled: one items line per chunk, one task line per task
        got.journal.close()
        kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
        assert kinds.count("items") == 2 and kinds.count("task") == 2, kinds
        assert len(got.result.gen_samples) == 7 and len(got.result.samples) == 7


def test_scoring_events_are_rate_limited(capsys, monkeypatch):
    """With the default limit, a chunk whose items all finish within a second sends at most
    one scoring event, however many answers it had."""
    monkeypatch.setattr(worker, "SCORING_EVERY_S", 3600.0)
    tasks = [gen_task(12)]
    got = worker._Measured()
    journal = worker._ItemJournal(SETTINGS, tasks, got, None)
    score_tasks(
        ByPrompt(template=CHATML),
        tasks,
        SETTINGS,
        chunk_size=12,
        on_items=journal.on_items,
        on_progress=journal.on_progress,
    )
    assert [e.done for e in _events(capsys, "scoring")] == [1]


def test_scoring_events_move_the_display_without_a_line_each():
    """On a terminal the bar's items follow each scoring event; off a terminal a scoring event
    prints only when no line came for every_s (items events always print), and neither ends
    the task before its last chunk's items event."""
    clock = Clock()
    bars: list = []

    def factory(**kw):
        bars.append(FakeBar(**kw))
        return bars[-1]

    p = ProgressPrinter(TTY(), bar=True, clock=clock, bar_factory=factory)
    p.event("m", Event("task", task="he", index=1, total=1, planned=3))
    assert len(bars) == 1 and bars[0].n == 0  # drawn from the start: "0/3 items", rate ?
    assert bars[0].postfix.startswith("rate ?, ETA ?")
    for done in (1, 2, 3):
        clock.now += 9
        p.event(
            "m", Event("scoring", task="he", done=done, planned=3, fresh=done, seconds=9.0 * done)
        )
        assert bars[-1].n == done and not bars[-1].closed
    p.event("m", _items(3, 3, 3, 28.0, task="he"))
    assert len(bars) == 1 and bars[0].closed

    out, clock = io.StringIO(), Clock()
    p = ProgressPrinter(out, bar=False, clock=clock, stamp=lambda: "T")
    p.event("m", Event("task", task="he", index=1, total=1, planned=164))
    for done in range(1, 7):  # an answer every 4 s: a line at 12 s and 24 s only
        clock.now += 4
        p.event(
            "m", Event("scoring", task="he", done=done, planned=164, fresh=done, seconds=4.0 * done)
        )
    lines = out.getvalue().splitlines()
    assert [line.split(": ")[2].split(",")[0] for line in lines] == ["3/164 items", "6/164 items"]
    assert p.state is not None and p.state.done == 6


class _Queue:
    """ray.util.queue.Queue's calls that the node and the head make."""

    def __init__(self) -> None:
        self.items: list[dict] = []

    def put_nowait(self, item: dict) -> None:
        self.items.append(item)

    def qsize(self) -> int:
        return len(self.items)

    def get_nowait_batch(self, n: int) -> list[dict]:
        got, self.items = self.items[:n], self.items[n:]
        return got


def test_cluster_pieces_reach_the_head_as_the_single_machine_display(monkeypatch):
    """bench --cluster: each node's worker events (through run.runner's watch and the node's
    Relay) come out of the head's queue into the same printer as on one machine: a bar per
    piece at once on a terminal, lines with a rate and an ETA otherwise; a head whose progress
    is a plain function gets a line per finished chunk only."""
    from edgeeval.cluster import driver, node
    from edgeeval.run.runner import _Watch

    monkeypatch.setattr(node, "node_id", lambda: "n0123456789")
    queue = _Queue()
    pieces = ("qwen on box-a", "gemma on box-b")
    for piece in pieces:  # the runner's watch on each node hands events to the node's relay
        watch = _Watch(piece.split()[0], SETTINGS, node.Relay(queue, piece))
        watch.event(Event("task", task="he", index=1, total=1, planned=164))
        watch.event(Event("working", done=12))  # the stall watch's beat: not sent on
        watch.event(Event("scoring", task="he", done=3, planned=164, fresh=3, seconds=27.0))
        watch.event(_items(32, 164, 32, 280.0, task="he"))
    kinds = [(q["event"], q.get("message", "")) for q in queue.items]
    assert ("progress", "qwen: task 1/1 he") in kinds  # a line, as on one machine
    assert sum(k == "worker" for k, _ in kinds) == 6  # task, scoring, items per piece
    assert not any("working" in q.get("line", "") for q in queue.items)

    clock, bars = Clock(), []

    def factory(**kw):
        bars.append(FakeBar(**kw))
        return bars[-1]

    sent = list(queue.items)
    printer = ProgressPrinter(TTY(), bar=True, clock=clock, bar_factory=factory)
    head = driver._Head(None, "r1", SETTINGS, driver.ClusterOptions("fake"), None, printer, None)
    head.events = queue
    head.drain()
    assert [(b.kwargs["desc"], b.kwargs["position"], b.kwargs["leave"]) for b in bars] == [
        ("qwen on box-a: he", 0, True),
        ("gemma on box-b: he", 1, False),
    ]
    assert all(b.n == 32 and "8.8 s/item" in b.postfix for b in bars)
    assert any(  # the head's lines go above the bars
        line.split("] ", 1)[1].startswith("[node n0123456] qwen on box-a: qwen: he: estimate")
        for line in bars[0].written
    )

    # a bar that ends while another moves is cleared, its last state a line above the other
    printer.event(pieces[0], _items(164, 164, 164, 1435.0, task="he"))
    assert bars[0].closed and bars[0].leave is False and not bars[1].closed
    assert (
        bars[1]
        .written[-1]
        .endswith(f"] {pieces[0]}: he: 164/164 items, 8.8 s/item, ETA 0:00 (elapsed 23:55)")
    )

    out = io.StringIO()
    printer = ProgressPrinter(out, bar=False, clock=clock, stamp=lambda: "T")
    head.progress, queue.items = printer, list(sent)
    head.drain()
    lines = [line for line in out.getvalue().splitlines() if "items," in line]
    assert lines == [
        f"[T] {p}: he: 32/164 items, 8.8 s/item, ETA 19:15 (elapsed 4:40)" for p in pieces
    ]

    said: list[str] = []
    head.progress, queue.items = said.append, list(sent)
    head.drain()
    assert [s for s in said if s.endswith(" items")] == [f"{p}: he: 32/164 items" for p in pieces]


def test_two_models_at_once_each_get_a_line_every_10_s():
    """Off a terminal, two pieces scored at once both show, however their events interleave."""
    out, clock = io.StringIO(), Clock()
    p = ProgressPrinter(out, bar=False, clock=clock, stamp=lambda: "T")
    for model in ("a", "b"):
        p.event(model, Event("task", task="he", index=1, total=1, planned=164))
    for step in range(1, 4):
        clock.now += 10
        p.tick()
        shown = [line.split(":")[0] for line in out.getvalue().splitlines()[-2:]]
        assert sorted(shown) == ["[T] a", "[T] b"], step
    assert len(out.getvalue().splitlines()) == 6


def test_a_pip_download_feeds_its_raw_progress_to_the_bar(tmp_path, monkeypatch):
    """pip's --progress-bar raw prints "Progress DONE of TOTAL" on stdout; each becomes a
    bytes callback. A pip that rejects "raw" (older than 24.1) is asked again without a bar,
    and a failing pip names the package and its last lines."""
    import sys

    import pytest

    from edgeeval.errors import FetchError
    from edgeeval.fetch import sources

    script = (
        "import sys\n"
        "mode = sys.argv[1]\n"
        "if mode == 'raw' and 'old' in sys.argv[2]:\n"
        "    sys.exit(\"error: invalid choice: 'raw'\") \n"
        "if 'broken' in sys.argv[2]:\n"
        "    sys.exit('ERROR: No matching distribution found for broken')\n"
        "print('Looking in indexes: https://pypi.org/simple')\n"
        "if mode == 'raw':\n"
        "    for k in (0, 400, 1000):\n"
        "        print(f'Progress {k} of 1000')\n"
        "print('Saved x.whl')\n"
    )
    calls = []

    def command(package, wheel_dir, progress_bar):
        calls.append((package, progress_bar))
        return [sys.executable, "-c", script, progress_bar, package]

    monkeypatch.setattr(sources, "_pip_command", command)
    seen = []
    sources._pip_download("m", "pkg", tmp_path, lambda done, total: seen.append((done, total)))
    assert seen == [(0, 1000), (400, 1000), (1000, 1000)] and calls == [("pkg", "raw")]
    seen.clear()
    sources._pip_download("m", "old-pkg", tmp_path, lambda d, t: seen.append((d, t)))
    assert seen == [] and calls[-2:] == [("old-pkg", "raw"), ("old-pkg", "off")]
    sources._pip_download("m", "quiet-pkg", tmp_path)  # no bar: no raw progress asked for
    assert calls[-1] == ("quiet-pkg", "off")
    with pytest.raises(FetchError, match="m: pip could not download broken:\n.*No matching"):
        sources._pip_download("m", "broken", tmp_path, lambda d, t: None)
