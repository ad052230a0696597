"""Make untrusted text safe for Markdown, CSV cells and one-line logs.

Error text, class names and peer names come from peers and data files.
Written as they are, they could break a Markdown table, inject links or
HTML into a rendered report, run as a spreadsheet formula
(``=HYPERLINK(...)``) when ``predictions.csv`` is opened, or forge log lines.
"""

from __future__ import annotations

import re

from ..errors import log_text

__all__ = ["csv_cell", "log_text", "markdown_cell"]

# Characters a spreadsheet reads as the start of a formula (OWASP's list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Characters with a meaning inside a Markdown paragraph or table cell.
_MARKDOWN_SPECIAL = re.compile(r"([\\`|\[\]])")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def markdown_cell(text: object) -> str:
    r"""Return ``text`` as literal Markdown for a table cell or an inline phrase.

    One line (see :func:`~vfl_embed.errors.log_text`); ``\``, backticks, ``|``, ``[`` and
    ``]`` (links, images that load a remote address) are backslash-escaped;
    ``&``, ``<`` and ``>`` become HTML entities; a leading ``#`` cannot
    start a heading.
    """
    line = _MARKDOWN_SPECIAL.sub(r"\\\1", log_text(text))
    line = "".join(_HTML.get(c, c) for c in line)
    return "\\" + line if line.startswith("#") else line


def csv_cell(text: object) -> str:
    """Return ``text`` so that a spreadsheet shows it instead of evaluating it.

    Text starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    gets a leading ``'``, unless it is a plain number (``-1`` stays a number).
    """
    cell = str(text)
    if cell.startswith(_FORMULA_START) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell
