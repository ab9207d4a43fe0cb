"""Strings from files (GGUF metadata, models.yaml, stored records) reach the terminal and the
reports only through safe_text: escape sequences are shown, not executed, and a '|' cannot
split a Markdown table cell."""

from __future__ import annotations

import dataclasses
import re

import pytest

from edgeeval import records as rec
from edgeeval.cli.main import main
from edgeeval.errors import ConfigError, InvalidModelFileError
from edgeeval.gguf.check import check_gguf
from edgeeval.report.html import render_html
from edgeeval.report.render import NOTES, ReportMeta, ranking_table, to_markdown
from edgeeval.report.summarize import rank_rows
from edgeeval.text import safe_text
from tests.builders import record
from tests.faults.inputs_support import ESC, GOOD_CATALOG, write_gguf

HOSTILE = f"evil{ESC}[2J{ESC}]0;owned\x07|x\u202eabc\x9b31m"


@pytest.mark.parametrize(
    "raw, shown",
    [
        (f"a{ESC}[31mb", "a\\x1b[31mb"),
        ("bell\x07", "bell\\x07"),
        ("csi\x9b", "csi\\x9b"),
        ("bidi\u202e", "bidi\\u202e"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("line\nbreak\ttab\r", "line\\nbreak\\ttab\\r"),
        ("plain ünïcödé 日本", "plain ünïcödé 日本"),
        (42, "42"),
    ],
)
def test_safe_text_shows_control_characters_as_escapes(raw, shown):
    assert safe_text(raw) == shown


def test_safe_text_keeps_newlines_only_when_asked_and_cuts_long_values():
    assert safe_text("a\nb", newlines=True) == "a\nb"
    assert safe_text("a\x1b\nb", newlines=True) == "a\\x1b\nb"
    assert safe_text("x" * 500, 10) == "x" * 10 + "…"


def test_safe_text_escapes_what_would_break_a_markdown_cell():
    cell = safe_text("a|b`c\\|d<script>", markdown=True)
    assert cell == "a\\|b\\`c\\\\\\|d&lt;script&gt;"
    assert not re.search(r"(?<!\\)\|", cell.replace("\\\\", ""))  # every pipe is escaped


def _no_raw_controls(text: str) -> bool:
    return not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", text)


def test_gguf_strings_in_errors_are_escaped(tmp_path):
    path = write_gguf(tmp_path / "a.gguf", {"general.alignment": ("add_string", HOSTILE)})
    with pytest.raises(InvalidModelFileError) as info:
        check_gguf(path)
    assert _no_raw_controls(str(info.value)) and "\\x1b[2J" in str(info.value)

    path = write_gguf(tmp_path / "t.gguf", tensor_name=f"w{ESC}[31m1")
    with open(path, "r+b") as fh:  # cut the data so the error names the tensor
        fh.truncate(path.stat().st_size - 100)
    with pytest.raises(InvalidModelFileError) as info:
        check_gguf(path)
    assert "tensor '" in str(info.value) and _no_raw_controls(str(info.value))


def test_a_hostile_name_and_error_stay_inside_their_report_cells():
    good = record("plain", peak_gb=0.5, acc=0.6)
    bad = dataclasses.replace(
        record("other", peak_gb=0.5, acc=0.0, status=rec.STATUS_ERROR),
        error=f"child said {HOSTILE}",
    )
    bad = dataclasses.replace(bad, variant=dataclasses.replace(bad.variant, name=HOSTILE))
    records = [good, bad]
    rows = rank_rows(records)
    markdown = to_markdown(rows, records, ReportMeta("r1"), ["t"])
    assert _no_raw_controls(markdown) and "\\x1b[2J" in markdown
    table = ranking_table(rows).splitlines()
    unescaped = [len(re.findall(r"(?<!\\)\|", line.replace("\\\\", ""))) for line in table]
    assert len(set(unescaped)) == 1  # every row has as many cell borders as the header
    html = render_html(rows, records, ReportMeta("r1"), [], tasks=["t"], notes=NOTES)
    assert _no_raw_controls(html) and "\\x1b[2J" in html


def test_the_cli_error_line_shows_escapes_not_raw_controls(tmp_path, capsys):
    path = tmp_path / "models.yaml"
    path.write_text(GOOD_CATALOG.replace("quant: Q8_0", 'quant: Q8_0\n    "q\\e[2J": 1'))
    assert main(["--catalog", str(path), "models"]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert _no_raw_controls(err) and "q\\x1b[2J" in err and len(err.strip().splitlines()) == 1


def test_the_models_listing_shows_escapes(tmp_path, capsys):
    path = tmp_path / "models.yaml"
    path.write_text(GOOD_CATALOG.replace("quant: Q8_0", 'quant: "Q8\\e[31m"'))
    assert main(["--catalog", str(path), "models"]) == 0
    out = capsys.readouterr().out
    assert _no_raw_controls(out) and "Q8\\x1b[31m" in out
