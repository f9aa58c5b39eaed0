"""textsafe: text from the node or the cluster, made safe for where it is shown.

Interface names, rule comments, pod and namespace names come from parties
netdrop does not trust (a NET_ADMIN pod names its own interfaces and writes its
own rules). Shown as they are, an ESC sequence in one of them would drive the
user's terminal, a `|` would break a Markdown table, and a cell starting with
`=` would be a formula in a spreadsheet. Each output applies the one function
that fits it, once, where it writes.
"""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls (a terminal takes 0x9b as CSI, like ESC [).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c, f"\\x{ord(c):02x}")


def printable(text: str) -> str:
    """One line fit for a terminal: every control character written as an escape."""
    return _CONTROL.sub(_escape, text)
