"""The bench's progress on stderr: a tqdm bar per task on a terminal, plain lines otherwise.

Library code reports progress as strings (`text.Progress`) and, for a model's worker, as
`engine.process.Event`s (run/runner.py hands each to `ProgressPrinter.event` when the printer
has one). This module turns them into output:

- on a terminal (stderr is a TTY, TERM is not `dumb`, no --quiet): one tqdm bar for the task
  being scored, with items done of planned, the rate and the ETA, redrawn every second;
- otherwise plain timestamped lines, and while a task is being scored at least one line every
  `every_s` (10) seconds with items done, the rate and the ETA.

The rate is items scored by this attempt over the seconds since the task started (a resumed
task's earlier items count as done, not as speed); the ETA is the items left over that rate,
counted down between the worker's events. Those are `items` after each journalled chunk and
`scoring` inside a chunk (each generated answer or group of questions, at most once a second),
so the items done move within a second or two of an answer, not once a chunk. No colour is
ever written (NO_COLOR holds trivially); `colour_allowed` says so for callers that would add
some.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from edgeeval.engine.process import Event

EVERY_S = 10.0  # a plain line at least this often while items are being scored
#: tqdm's postfix (rate, ETA, elapsed: ours, the same as the plain lines') follows ", "
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} items{postfix}"
TICK_S = 1.0  # how often the bar is redrawn and the plain-line cadence checked


def colour_allowed(env: Mapping[str, str] | None = None) -> bool:
    """False when NO_COLOR is set to anything non-empty (no-color.org) or TERM is dumb."""
    env = os.environ if env is None else env
    return not env.get("NO_COLOR") and env.get("TERM", "") != "dumb"


def bar_wanted(stream: TextIO, *, quiet: bool, env: Mapping[str, str] | None = None) -> bool:
    """A bar only on a terminal that can redraw a line, not with --quiet, and not where
    HF_HUB_DISABLE_PROGRESS_BARS turns huggingface_hub's (tqdm) bars off too."""
    env = os.environ if env is None else env
    isatty = getattr(stream, "isatty", None)
    hf_off = env.get("HF_HUB_DISABLE_PROGRESS_BARS", "").lower() in ("1", "true", "yes", "on")
    return not quiet and not hf_off and bool(isatty and isatty()) and env.get("TERM", "") != "dumb"


def clock_text(seconds: float | None) -> str:
    """H:MM:SS or M:SS; '?' when unknown."""
    if seconds is None:
        return "?"
    s = max(int(round(seconds)), 0)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class TaskState:
    """One task's items as the last `items` event told them, and when it came."""

    model: str
    task: str
    planned: int = 0
    done: int = 0
    fresh: int = 0
    seconds: float = 0.0  # since the task started, at the last event
    at: float = 0.0  # the clock when the last event came

    def rate(self) -> float | None:
        """Items per second scored by this attempt; None before the first one."""
        if self.fresh <= 0 or self.seconds <= 0:
            return None
        return self.fresh / self.seconds

    def eta(self, now: float) -> float | None:
        """Seconds left: the items left over the rate, less the time since the last event."""
        rate = self.rate()
        if rate is None:
            return None
        left = max(self.planned - self.done, 0) / rate
        return max(left - (now - self.at), 0.0)

    def speed(self) -> str:
        """The rate in words: "2.50 items/s", "7.2 s/item", or "rate ?" before any item."""
        rate = self.rate()
        if rate is None:
            return "rate ?"
        return f"{rate:.2f} items/s" if rate >= 1 else f"{1 / rate:.1f} s/item"

    def elapsed(self, now: float) -> float:
        return self.seconds + (now - self.at)

    def line(self, now: float) -> str:
        speed, elapsed = self.speed(), self.elapsed(now)
        return (
            f"{self.model}: {self.task}: {self.done}/{self.planned or '?'} items, {speed}, "
            f"ETA {clock_text(self.eta(now))} (elapsed {clock_text(elapsed)})"
        )


BarFactory = Callable[..., Any]


def _tqdm(**kwargs: Any) -> Any:
    from tqdm import tqdm

    return tqdm(**kwargs)


class ProgressPrinter:
    """Callable as `text.Progress` (a line) with `event(model, Event)` for a worker's events.

    Several models may be scored at once (`bench --cluster`: one per node): each has its own
    task state, its own bar (a line each; a bar that ends while others are drawn is cleared and
    its last state printed as a line above them) and its own plain-line cadence; one machine
    has one model at a time.

    `start()` begins the ticker thread (bar redraws and the plain-line cadence); `close()` ends
    it and the bars. Tests drive `tick()` with their own clock instead."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        quiet: bool = False,
        bar: bool | None = None,
        env: Mapping[str, str] | None = None,
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        stamp: Callable[[], str] = lambda: time.strftime("%H:%M:%S"),
        bar_factory: BarFactory = _tqdm,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.use_bar = bar_wanted(self.stream, quiet=quiet, env=env) if bar is None else bar
        self.every_s, self.clock, self.stamp = every_s, clock, stamp
        self.bar_factory = bar_factory
        self.states: dict[str, TaskState] = {}  # by model, while one of its tasks is scored
        self._bars: dict[str, Any] = {}  # by model
        self._rows: dict[str, int] = {}  # each bar's line below the first (tqdm's position)
        self._latest: str | None = None  # the model the last event was about
        self._bytes_bar: Any = None
        self._last_line = clock()  # any line
        self._line_at: dict[str, float] = {}  # each model's last items line
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> TaskState | None:
        """The task of the model the last event was about, None when it has none going."""
        return self.states.get(self._latest) if self._latest is not None else None

    # -- text.Progress -------------------------------------------------------------------
    def __call__(self, message: str) -> None:
        with self._lock:
            text = f"[{self.stamp()}] {message}"
            bar = next(iter(self._bars.values()), None)
            if bar is not None:
                bar.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)
            self._last_line = self.clock()

    # -- worker events -------------------------------------------------------------------
    def event(self, model: str, event: Event) -> None:
        with self._lock:
            self._latest = model
            if event.kind == "task":  # the worker names the items it plans (0 when it cannot)
                self._end_bar(model)
                self.states[model] = TaskState(
                    model, event.task, planned=event.planned, at=self.clock()
                )
                if self.use_bar and event.planned:  # "0/164 items" drawn until the first one
                    self._open_bar(model)
                    self._draw(model, self.clock())
            elif event.kind in ("items", "scoring"):
                self._items(model, event)
            elif event.kind in ("done", "loading"):
                self._end_bar(model)
                self.states.pop(model, None)

    def _due(self, model: str, now: float) -> bool:
        """Whether `model`'s plain line is due: none for every_s, of its own or any other."""
        return now - max(self._last_line, self._line_at.get(model, -1e18)) >= self.every_s

    def _line(self, st: TaskState, now: float) -> None:
        self(st.line(now))
        self._line_at[st.model] = now

    def _items(self, model: str, event: Event) -> None:
        """An items event (a journalled chunk: a line off a terminal) or a scoring event
        (items inside a chunk, up to once a second: a line only when none came for every_s)."""
        now = self.clock()
        st = self.states.get(model)
        if st is None or st.task != event.task:
            self._end_bar(model)
            st = self.states[model] = TaskState(model, event.task)
        st.planned, st.done, st.fresh = event.planned, event.done, event.fresh
        st.seconds, st.at = float(event.seconds or 0.0), now
        if self.use_bar:
            if model not in self._bars:
                self._open_bar(model)
            self._bars[model].total = st.planned
            self._draw(model, now)
        elif event.kind == "items" or self._due(model, now):
            self._line(st, now)
        if event.kind == "items" and st.done >= st.planned:
            self._end_bar(model)
            self.states.pop(model, None)

    def _open_bar(self, model: str) -> None:
        """A bar for `model`'s task on the first free line (tqdm's position)."""
        st = self.states[model]
        taken = {self._rows.get(m) for m in self._bars}
        position = min(set(range(len(self._bars) + 1)) - taken)
        self._bars[model] = self.bar_factory(
            total=st.planned,
            initial=0,
            desc=f"{model}: {st.task}",
            unit="item",
            file=self.stream,
            # a pty of size 0 (script(1) with no terminal) makes tqdm draw nothing
            ncols=shutil.get_terminal_size((100, 24)).columns,
            nrows=shutil.get_terminal_size((100, 24)).lines,
            leave=position == 0,
            position=position,
            bar_format=BAR_FORMAT,
        )
        self._rows[model] = position

    def _draw(self, model: str, now: float) -> None:
        st, bar = self.states.get(model), self._bars.get(model)
        if bar is None or st is None:
            return
        bar.n = st.done
        speed, elapsed = st.speed(), st.elapsed(now)
        bar.set_postfix_str(
            f"{speed}, ETA {clock_text(st.eta(now))}, elapsed {clock_text(elapsed)}",
            refresh=False,
        )
        bar.refresh()

    def _end_bar(self, model: str) -> None:
        """Close `model`'s bar. The first line's bar stays on screen when no other is drawn;
        otherwise it is cleared and its last state printed as a line above the others (tqdm
        cannot leave a bar among bars still moving)."""
        bar = self._bars.pop(model, None)
        if bar is None:
            return
        keep = self._rows.get(model) == 0 and not self._bars
        if not keep:
            bar.leave = False
        bar.close()
        st = self.states.get(model)
        if not keep and st is not None:
            self(st.line(self.clock()))

    # -- bytes (hashing a model file) ----------------------------------------------------
    def bytes(self, label: str, done: int, total: int) -> None:
        """`done` of `total` bytes of `label` (fetch's sha256 of a model file): a bar on a
        terminal, else a line every `every_s` and at the end."""
        with self._lock:
            if self.use_bar:
                if self._bytes_bar is None:
                    self._bytes_bar = self.bar_factory(
                        total=total,
                        desc=label,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        file=self.stream,
                        ncols=shutil.get_terminal_size((100, 24)).columns,
                        nrows=shutil.get_terminal_size((100, 24)).lines,
                        leave=False,
                    )
                self._bytes_bar.update(done - self._bytes_bar.n)
                if done >= total:
                    self._bytes_bar.close()
                    self._bytes_bar = None
                return
            now = self.clock()
            if done >= total or now - self._last_line >= self.every_s:
                self(f"{label}: {done / 1e6:.0f} of {total / 1e6:.0f} MB")

    # -- the ticker ----------------------------------------------------------------------
    def tick(self) -> None:
        """Redraw the bars, or print each task's line that is due (none for every_s)."""
        with self._lock:
            now = self.clock()
            due = [m for m in self.states if m not in self._bars and self._due(m, now)]
            for model in list(self.states):
                if model in self._bars:
                    self._draw(model, now)
            for model in due:  # all due lines, though the first one restarts the cadence
                self._line(self.states[model], now)

    def start(self) -> ProgressPrinter:
        def run() -> None:
            while not self._stop.wait(TICK_S):
                self.tick()

        self._thread = threading.Thread(target=run, name="edgeeval-progress", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> ProgressPrinter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * TICK_S)
        with self._lock:
            for model in list(self._bars):
                self._end_bar(model)
            self.states.clear()
