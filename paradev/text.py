"""Plan text (titles) on a terminal and in commit messages.

A title is whatever someone typed into plan.toml or ``paradev assign``: it may
hold escape sequences that recolour, retitle or clear the terminal it is
printed on, or control characters that garble a commit subject. Printed, they
are shown escaped (visible, ``\\x1b[31m``); in a commit message they are dropped.
"""

from __future__ import annotations

import unicodedata

# Escape sequences as terminals read them: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST),
# other ESC + one character. Everything they contain goes with them in a commit message.
# Compiled at first use (re's cache): text that is printable already never needs it.
_ESCAPE = (
    r"\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC
    r"|\x9b[0-?]*[ -/]*[@-~]?"  # 8-bit CSI
    r"|\x1b[\s\S]?"  # any other escape
)
_WHITESPACE_CONTROLS = "\t\n\r\v\f"


def _is_control(char: str) -> bool:
    """C0/C1 controls, DEL, format characters (bidi overrides...), lone surrogates."""
    return unicodedata.category(char) in ("Cc", "Cf", "Cs") or char in "\u2028\u2029"


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` as one terminal line: every control character shown as ``\\xNN``/``\\uNNNN``."""
    if text.isprintable():  # the common case, without a per-character walk
        return text
    return "".join(_escaped(c) if _is_control(c) else c for c in text)


def plain(text: str) -> str:
    """``text`` for a commit subject: escape sequences and controls dropped, whitespace kept.

    Line breaks and tabs become single spaces so a title stays one subject line.
    """
    if text.isprintable():
        return text
    import re  # at first use: most text is printable already

    text = re.sub(_ESCAPE, "", text)
    kept = "".join(
        " " if c in _WHITESPACE_CONTROLS else c
        for c in text
        if c in _WHITESPACE_CONTROLS or not _is_control(c)
    )
    return re.sub(r" {2,}", " ", kept)


def printable_lines(text: str) -> str:
    """``text`` for a terminal, its line breaks kept: every other control character escaped.

    For messages that quote what agents wrote (commit subjects, file names).
    """
    if text.isprintable():
        return text
    return "\n".join(printable(line) for line in text.split("\n"))


def log_line(line: str) -> str:
    """One line of a program's log as a page shows it: colours and controls dropped.

    A progress line redrawn with carriage returns keeps only what was drawn last.
    Tabs and runs of spaces stay: a log's alignment matters.
    """
    if line.isprintable():
        return line
    line = line.rstrip("\r").rsplit("\r", 1)[-1]
    import re

    line = re.sub(_ESCAPE, "", line)
    return "".join(c for c in line if c == "\t" or not _is_control(c))
