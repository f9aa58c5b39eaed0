"""textsafe: text from the node or the cluster, made safe for where it is shown.

Interface names, rule comments, pod and namespace names come from parties
netdrop does not trust (a NET_ADMIN pod names its own interfaces and writes its
own rules). Shown as they are, an ESC sequence in one of them would drive the
user's terminal, a `|` would break a Markdown table, and a cell starting with
`=` would be a formula in a spreadsheet. Each output applies the one function
that fits it, once, where it writes; the data itself (summary.json, JSON lines)
keeps the text as netdrop has it, which JSON escapes by itself. Text from the
Kubernetes API is made safe earlier still, where it enters (pods/apitext.py:
/metrics labels and alert text have no writer of their own here), so for
names from the API these functions find nothing left to escape.

    terminal (rich console, summary table, stderr lines)   printable
    Markdown                                                markdown_text
    CSV                                                     csv_cell
    HTML                                                    html_text
"""

from __future__ import annotations

import html
import re

# C0 controls, DEL and C1 controls (a terminal takes 0x9b as CSI, like ESC [);
# bidirectional overrides and isolates and the line and paragraph separators,
# which reorder or break what is shown ("Trojan Source", CVE-2021-42574); lone
# surrogates (text decoded with surrogateescape), which no terminal encoding
# can write: printing one raises UnicodeEncodeError.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")

# What Markdown (CommonMark and GitHub's tables) would read as syntax inside a
# line: emphasis, code spans, links and images, autolinks and raw HTML, entity
# references, table cells, strikethrough, headings, mentions. CommonMark lets
# any ASCII punctuation be escaped with a backslash (spec 2.4), so the escape
# shows the character itself. An underscore between two letters or digits
# never opens or closes emphasis (spec 6.2), so kernel names like PKT_TOO_BIG
# stay as they are; dots, dashes and colons only mean something at the start
# of a line, where netdrop never puts node text, so addresses stay readable.
_MARKDOWN = re.compile(r"[\\`*{}\[\]<>|~&#!@]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")

# OWASP "CSV injection": a spreadsheet reads a cell starting with one of these
# as a formula (TAB and CR too: some strip them and then see the formula).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    code = ord(c)
    return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c, f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")


def printable(text: str) -> str:
    """One line fit for a terminal: every control character written as an escape."""
    return _CONTROL.sub(_escape, text)


def markdown_text(text: str) -> str:
    """Text for a Markdown line or table cell: one line, its syntax characters escaped."""
    return _MARKDOWN.sub(lambda m: "\\" + m.group(0), printable(text))


def csv_cell(text: str) -> str:
    """A CSV cell of text: one line (the CSV is often read on a terminal too), and
    never a formula: a leading quote makes a spreadsheet take it as text. Numbers
    netdrop writes as numbers are not text and do not come here."""
    text = printable(text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def html_text(text: str) -> str:
    """Text for HTML content or a quoted attribute, control characters escaped as
    for a terminal (they are invalid in HTML, and a page gets read with cat)."""
    return html.escape(printable(text))
