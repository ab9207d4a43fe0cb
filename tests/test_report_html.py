"""The self-contained HTML report and its PNG plots, checked as files and in headless Chromium.

The browser test drives Debian's chromium over the DevTools protocol on a pipe
(--remote-debugging-pipe: fd 3 in, fd 4 out), so nothing listens on any port and the page is
opened from a file:// URL with no network at all.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.cli.main import main
from edgeeval.report.plots import fidelity_points, kld_vs_bits
from edgeeval.report.render import render_run
from edgeeval.report.summarize import rank_rows
from edgeeval.report.terminal import terminal_table
from edgeeval.store import runs as store
from tests.builders import host, record, speed
from tests.test_golden import render_golden_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# the plots drawn for build_run's run: no fidelity results, so no KLD plot (not an empty one)
PLOT_IDS = ["plot-capability-memory", "plot-speed-memory", "plot-speed-threads"]
# the catalog's longest variant name: the ranked column must still show beside it at 800 px
LONG = "deepseek-r1-distill-qwen-1.5b-fp4-ffn-q8-attn-local"
# Debian's package installs /usr/bin/chromium; Ubuntu's snap is chromium-browser on the PATH.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


def sweep(pp: tuple[float, float], tg: tuple[float, float]) -> list[rec.SpeedResult]:
    """A threads sweep (1 and 2 threads) with three repetitions each."""
    return [
        speed("pp128", [pp[0] - 1, pp[0], pp[0] + 1], n_threads=1),
        speed("tg32", [tg[0] - 0.5, tg[0], tg[0] + 0.5], n_threads=1),
        speed("pp128", [pp[1] - 1, pp[1], pp[1] + 1], n_threads=2),
        speed("tg32", [tg[1] - 0.5, tg[1], tg[1] + 0.5], n_threads=2),
    ]


def build_run(run_id: str = "run1") -> Path:
    """A stored run of hand-built records: two families, a dominated variant, a tie, a crash,
    a threads sweep, and the same files measured on a second host (for the by-host section)."""
    root = settings.reports_dir()
    swept = rec.RunSettings(sweep_threads=(1, 2))
    table = [
        ("qwen-q8", "qwen", 0.75, 0.80, (60, 110), (14, 25)),
        (LONG, "qwen", 0.45, 0.76, (80, 150), (22, 38)),
        ("gemma-q4", "gemma", 0.35, 0.55, (95, 170), (26, 45)),
        ("gemma-q8 <b>", "gemma", 0.60, 0.52, (70, 120), (16, 28)),
    ]
    records = [
        record(
            name,
            peak_gb=peak,
            acc=acc,
            family=family,
            run_id=run_id,
            settings=swept,
            size_gb=peak * 0.8,
            speeds=sweep(pp, tg),
        )
        for name, family, peak, acc, pp, tg in table
    ]
    records.append(
        record(
            "smol-broken",
            peak_gb=0.1,
            acc=0.0,
            run_id=run_id,
            status=rec.STATUS_CRASH,
            settings=swept,
        )
    )
    store.write_manifest(
        run_id,
        {"run_id": run_id, "host": rec.to_dict(records[0].host), "settings": rec.to_dict(swept)},
        root,
    )
    for r in records:
        store.save_record(r, root=root)
    laptop = host("h2", "laptop", cpu_model="Apple M2", backend="Metal")
    store.insert_records(
        [
            record(
                n,
                peak_gb=p * 1.1,
                acc=a,
                family=f,
                run_id="laptop-run",
                host_info=laptop,
                settings=swept,
                speeds=sweep(pp, tg),
            )
            for n, f, p, a, pp, tg in table[:2]
        ],
        root,
    )
    return store.run_dir(run_id, root)


def test_report_writes_html_and_every_plot_as_png():
    build_run()
    _, rows, paths = render_run("run1", budget_gb=0.7)
    for plot_id in PLOT_IDS:
        png = paths[f"png-{plot_id.removeprefix('plot-')}"]
        assert png.name == f"{plot_id}.png" and png.read_bytes().startswith(PNG_MAGIC)
    html = paths["html"].read_text(encoding="utf-8")
    assert html.count("<img ") == len(PLOT_IDS)
    for plot_id in PLOT_IDS:
        data = re.search(rf'id="{plot_id}"[^>]*src="data:image/png;base64,([^"]+)"', html)
        assert data, plot_id
        assert base64.b64decode(data.group(1)) == paths[f"png-{plot_id[5:]}"].read_bytes()
    assert 'id="ranking"' in html and 'id="tasks"' in html and 'id="host-1"' in html
    # a plot without data is one sentence, not an empty image, and leaves no file behind
    assert "Not drawn, for lack of data: KLD vs bits per weight (no fidelity data" in html
    assert "png-kld-bpw" not in paths and not (paths["html"].parent / "plot-kld-bpw.png").exists()
    assert "gemma-q8 &lt;b&gt;" in html and "gemma-q8 <b>" not in html  # names are escaped
    assert "over budget" in html and "dominated by" in html and "crash" in html
    assert paths["md"].exists() and paths["csv"].exists() and paths["json"].exists()
    assert [r.name for r in rows if r.over_budget] == ["qwen-q8"]


def test_html_needs_no_network():
    build_run()
    _, _, paths = render_run("run1")
    html = paths["html"].read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "<script>" in html and "<style>" in html


def test_report_command_ranks_within_a_budget(capsys):
    build_run()
    assert main(["report", "run1", "--budget-gb", "0.7"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\| +- \| qwen-q8 +\| ", out, re.M), out
    assert "over budget" in out and "report.html" in out
    assert max(len(line) for line in out.splitlines()) <= 100, out
    assert "10^9" not in out  # the terminal shows the compact table, not the notes
    with pytest.raises(SystemExit):
        main(["report", "run1", "--budget-gb", "0"])
    assert "positive number of GB" in capsys.readouterr().err


def _fidelity(variant: str, kld: float) -> rec.FidelityResult:
    return rec.FidelityResult(
        run_id="run1",
        variant=variant,
        reference="ref",
        status="ok",
        corpus="pydoc",
        corpus_sha256="c" * 64,
        n_ctx=512,
        n_chunks=4,
        n_tokens=1024,
        ppl=10.0,
        ppl_se=0.1,
        ppl_ref=9.0,
        ppl_ref_se=0.1,
        kld_mean=kld,
        kld_se=kld / 10,
        ln_ppl_ratio=kld / 2,
        ln_ppl_ratio_se=kld / 20,
        kld_max=kld * 9,
        kld_p999=kld * 8,
        kld_p99=kld * 5,
        kld_p90=kld * 2,
        kld_median=kld / 2,
        same_top_pct=90.0,
        same_top_se_pct=0.5,
        rms_dp_pct=5.0,
        rms_dp_se_pct=0.2,
    )


def test_kld_plot_draws_fidelity_results_against_bits_per_weight():
    low = dataclasses.replace(record("q-q4", peak_gb=0.3, acc=0.5, size_gb=0.5), n_params=10**9)
    high = dataclasses.replace(record("q-q8", peak_gb=0.6, acc=0.6, size_gb=1.0), n_params=10**9)
    results = [_fidelity("q-q4", 0.1), _fidelity("q-q8", 0.01)]
    assert fidelity_points([low, high], results) == [
        ("qwen", "q-q4", (4.0, 0.1)),
        ("qwen", "q-q8", (8.0, 0.01)),
    ]
    assert kld_vs_bits([low, high], results).has_data
    assert not kld_vs_bits([low, high], []).has_data


def test_fidelity_results_of_the_run_appear_in_the_report():
    root = settings.reports_dir()
    store.write_manifest("fid", {"run_id": "fid"}, root)
    r = dataclasses.replace(
        record("q-q4", peak_gb=0.3, acc=0.5, size_gb=0.5, run_id="fid"), n_params=10**9
    )
    store.save_record(r, root=root)
    with open(store.run_dir("fid", root) / "fidelity.jsonl", "w") as fh:
        fh.write(rec.to_json(dataclasses.replace(_fidelity("q-q4", 0.0873), run_id="fid")))
    _, _, paths = render_run("fid")
    text = paths["md"].read_text()
    assert "| q-q4 | Q4_K_M | 0.500 | 4.00 |" in text and "0.08730 ± 0.00873" in text
    assert 'id="variants"' in paths["html"].read_text()


def test_make_report_target_rerenders_the_latest_run():
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    assert re.search(r"^report:.*\n\t\$\(PY\) -m edgeeval report latest$", makefile, re.M)


def _h2_titles(html: str) -> list[str]:
    return [unescape(re.sub(r"<[^>]+>", "", t)) for t in re.findall(r"<h2[^>]*>(.*?)</h2>", html)]


def _md_titles(markdown: str) -> list[str]:
    return [line[3:] for line in markdown.splitlines() if line.startswith("## ")]


def test_every_section_of_report_md_is_in_the_html(tmp_path):
    """Both the hand-built run and the real golden run (a failed variant, a skipped task,
    fidelity, the memory and roofline table): report.md's sections are report.html's, in
    words and numbers, and every one is linked from the top of the page."""
    build_run()
    _, _, paths = render_run("run1", budget_gb=0.7)
    golden = render_golden_run(tmp_path / "reports")
    golden_html = next((tmp_path / "reports").glob("*/report.html")).read_text()
    pages = [
        (paths["md"].read_text(), paths["html"].read_text()),
        (golden["report.md"].decode(), golden_html),
    ]
    for markdown, html in pages:
        titles = _h2_titles(html)
        assert set(_md_titles(markdown)) <= set(titles), set(_md_titles(markdown)) - set(titles)
        toc = re.search(r'<nav class="toc".*?</nav>', html, re.S)
        assert toc and re.findall(r'href="#([^"]+)"', toc.group()) == re.findall(
            r'<h2 id="([^"]+)"', html
        )
        assert 'href="#how-to-read-this"' in toc.group() and '<h2 id="how-to-read-this">' in html
        assert html.index('id="legend"') < html.index('id="ranking"')
    markdown, html = pages[1]
    for shown in (
        "TTFT ms",
        "1731 ± 2214",
        "98.3",
        "task humaneval (skipped, not counted)",
        "KLD 99.9%",
        "--allow-code-exec",
        "backend: CPU",
    ):
        assert shown in markdown and shown in unescape(re.sub(r"<[^>]+>", "", html)), shown


def test_the_ranked_metric_sits_beside_the_variant_in_report_md():
    build_run()
    _, rows, paths = render_run("run1", budget_gb=0.7)
    table = [line for line in paths["md"].read_text().splitlines() if line.startswith("| ")]
    assert table[0].startswith("| rank | variant | cap/GB | capability |")
    first = next(r for r in rows if r.name == LONG)  # rank =1, tied with gemma-q4
    cap = f"{first.capability_per_gb:.1f} ± {first.capability_per_gb_se:.1f}"
    assert f"| =1 | {first.name} | {cap} |" in paths["md"].read_text()


def test_the_terminal_table_fits_100_columns():
    """Long names and statuses are cut (the name in its middle, the status at its end) so
    that every line fits; a short table is not cut at all; pipes stay escaped."""
    piped = record("p", peak_gb=0.2, acc=0.7)
    piped = dataclasses.replace(
        piped, variant=dataclasses.replace(piped.variant, name=LONG + "|x" * 20)
    )
    records = [piped] + [record(f"{LONG}-{i}", peak_gb=0.2 + i / 10, acc=0.7) for i in range(3)]
    rows = rank_rows(records)
    assert any(len(r.tied_with) >= 2 for r in rows)  # long statuses: "...; tied with a, b"
    text = terminal_table(rows)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100, text
    assert [c.strip() for c in lines[0].split("|")[1:4]] == ["#", "variant", "cap/GB"]
    assert any("…" in line for line in lines[2:])  # something had to be cut
    assert f"{LONG[:10]}" in text and "-2 " in text  # a name keeps its start and its end
    body = lines[2 : 2 + len(rows)]
    unescaped = {
        len(re.findall(r"(?<!\\)\|", line.replace("\\\\", ""))) for line in [lines[0], *body]
    }
    assert unescaped == {8}, text
    short = terminal_table(rank_rows([record("a", peak_gb=0.2, acc=0.7)]))
    assert "…" not in short and "| a       |" in short
    assert all(len(line) < 80 for line in short.splitlines()[:3])  # not padded out to 100


# ---- in the browser ---------------------------------------------------------------------


class DevTools:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe."""

    def __init__(self, args: list[str], log: Path, timeout_s: float = 90.0) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds() -> None:  # runs in the child: the browser reads fd 3 and writes fd 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.log = log
        with log.open("wb") as output:
            self.proc = subprocess.Popen(
                args + ["--remote-debugging-pipe"],
                preexec_fn=wire_fds,
                close_fds=False,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.deadline = time.monotonic() + timeout_s
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._next_id = 0

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = self.deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(left, 0))
            if not ready:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(
                    f"chromium exited (code {self.proc.poll()}); its output is in {self.log}"
                )
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        """The first event named `method` (already received or arriving later)."""
        while True:
            found = next((e for e in self.events if e.get("method") == method), None)
            if found:
                return found
            self.events.append(self._read_message())

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def page_errors(events: list[dict[str, Any]]) -> list[str]:
    """Uncaught exceptions, console.error/assert calls and error log entries."""
    out = []
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.exceptionThrown":
            out.append(json.dumps(p["exceptionDetails"])[:500])
        elif e.get("method") == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            out.append(json.dumps(p["args"])[:500])
        elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(p["entry"]["text"])
    return out


# Everything checked inside the page, returned as JSON: tables, images, and that a header
# click sorts (text ascending, then descending; the rank column puts unranked rows last).
PAGE_PROBE = """(() => {
  const names = id => Array.from(document.getElementById(id).tBodies[0].rows,
                                 r => r.cells[1].textContent);
  const head = (id, i) => document.getElementById(id).tHead.rows[0].cells[i];
  const out = {
    tables: Array.from(document.querySelectorAll("table.sortable"), t => t.id),
    images: Array.from(document.images, i => ({id: i.id, ok: i.complete && i.naturalWidth > 0,
                                                 width: i.naturalWidth})),
    before: names("ranking")};
  head("ranking", 1).click(); out.asc = names("ranking");
  head("ranking", 1).click(); out.desc = names("ranking");
  head("ranking", 0).click();
  out.ranks = Array.from(document.getElementById("ranking").tBodies[0].rows,
                         r => r.cells[0].textContent);
  return JSON.stringify(out);
})()"""


# Where the ranking's columns lie at the page's current width: a column is "shown" when every
# one of its cells (header included) lies inside both the table's scroll box and the window,
# at the scroll position the page opens with; a column past the right edge is cut off.
WIDTH_PROBE = """(() => {
  const table = document.getElementById("ranking");
  const box = table.closest(".scroll").getBoundingClientRect();
  const right = Math.min(box.right, window.innerWidth);
  const heads = Array.from(table.tHead.rows[0].cells, c => c.textContent);
  const shown = name => {
    const i = heads.indexOf(name);
    return i >= 0 && Array.from(table.rows, r => r.cells[i].getBoundingClientRect())
      .every(b => b.width > 0 && b.left >= box.left - 0.5 && b.right <= right + 0.5);
  };
  const link = document.querySelector('nav.toc a[href="#how-to-read-this"]');
  return JSON.stringify({
    width: window.innerWidth, heads: heads,
    shown: Object.fromEntries(heads.map(h => [h, shown(h)])),
    link_top: link ? link.getBoundingClientRect().top : null,
    height: window.innerHeight,
    target: !!document.getElementById("how-to-read-this"),
    legend_before_table: !!(document.getElementById("legend").compareDocumentPosition(table)
                            & Node.DOCUMENT_POSITION_FOLLOWING)});
})()"""


def at_width(tools: DevTools, session: str, width: int, shot: Path) -> dict[str, Any]:
    """Lay the page out `width` CSS pixels wide (an 900-pixel-high window), screenshot it
    whole into `shot`, and return WIDTH_PROBE's answer."""
    tools.call(
        "Emulation.setDeviceMetricsOverride",
        session,
        width=width,
        height=900,
        deviceScaleFactor=1,
        mobile=False,
    )
    result = tools.call("Runtime.evaluate", session, expression=WIDTH_PROBE, returnByValue=True)
    screenshot(tools, session, shot)
    return json.loads(result["result"]["value"])


def chromium_args(user_data: Path) -> list[str]:
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--no-default-browser-check",
        "--mute-audio",
        "--hide-scrollbars",
        "--window-size=1280,2000",
        f"--user-data-dir={user_data}",
        "about:blank",
    ]


def open_report(tools: DevTools, url: str) -> str:
    """Attach to a fresh page, enable the event domains, load `url`; return the session."""
    target = tools.call("Target.createTarget", url="about:blank")["targetId"]
    session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Runtime", "Log", "Page"):
        tools.call(f"{domain}.enable", session)
    tools.call("Page.navigate", session, url=url)
    tools.wait_for("Page.loadEventFired")
    return session


def screenshot(tools: DevTools, session: str, path: Path) -> None:
    size = tools.call("Page.getLayoutMetrics", session)["cssContentSize"]
    shot = tools.call(
        "Page.captureScreenshot",
        session,
        format="png",
        captureBeyondViewport=True,
        clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def test_html_report_in_headless_chromium(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "chromium is not installed, and the browser test of the HTML report needs it: run "
            "`make sysdeps` (it runs `sudo apt-get install chromium bubblewrap` on Debian; on "
            "Ubuntu run `sudo snap install chromium`), then `make test` again"
        )
    directory = build_run()
    _, rows, paths = render_run("run1", budget_gb=0.7)
    tools = DevTools(chromium_args(tmp_path / "chromium-profile"), tmp_path / "chromium.log")
    try:
        session = open_report(tools, paths["html"].resolve().as_uri())
        errors = page_errors(tools.events)
        probe = json.loads(
            tools.call("Runtime.evaluate", session, expression=PAGE_PROBE, returnByValue=True)[
                "result"
            ]["value"]
        )
        screenshot(tools, session, directory / "report.png")
        widths = {
            w: at_width(tools, session, w, directory / f"report-{w}.png") for w in (800, 1400)
        }
        # the error detector can fail: an exception thrown in the page must be seen
        tools.call(
            "Runtime.evaluate",
            session,
            expression="setTimeout(() => { throw new Error('probe'); }, 0)",
        )
        tools.wait_for("Runtime.exceptionThrown")
    finally:
        tools.close()
    assert errors == []
    assert {"ranking", "tasks", "host-1", "host-2"} <= set(probe["tables"])
    assert [i["id"] for i in probe["images"]] == PLOT_IDS
    assert all(i["ok"] and i["width"] >= 600 for i in probe["images"]), probe["images"]
    ranked = [r.name for r in rows]
    assert probe["before"] == ranked
    assert probe["asc"] == sorted(ranked) and probe["desc"] == sorted(ranked, reverse=True)
    numbers = [int(r.lstrip("=")) for r in probe["ranks"] if r != "-"]
    assert numbers == sorted(numbers) and len(numbers) == 3
    assert probe["ranks"][3:] == ["-", "-"]  # over budget and crashed: last when sorted
    png = (directory / "report.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 50_000
    # the ranked metric is in view beside the longest catalog name, at laptop width and wide
    for width, seen in widths.items():
        assert seen["width"] == width, seen
        assert seen["shown"]["rank"] and seen["shown"]["variant"], seen
        assert seen["shown"]["cap/GB"], f"cap/GB is cut off at {width} px: {seen}"
        assert seen["target"] and seen["legend_before_table"], seen
        assert seen["link_top"] is not None and 0 <= seen["link_top"] < seen["height"], seen
        assert (directory / f"report-{width}.png").read_bytes().startswith(PNG_MAGIC)
    # and the probe sees a column that is cut off: at 800 px the table scrolls sideways
    narrow = widths[800]["shown"]
    assert not narrow[widths[800]["heads"][-1]], widths[800]
