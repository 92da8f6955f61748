"""SQL literals for the export files, rendered by SQLite itself, and the cutting of long text into pieces."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence

SqlValue = str | int | float | bytes | None

# quote() stops at a NUL (it would truncate silently), and a carriage return does not survive tools that
# normalise line endings: text holding either is written as its UTF-8 bytes in hex, cast back to TEXT.
_NOT_QUOTABLE = ("\x00", "\r")
_HEX_TEXT_OVERHEAD = len("CAST(X'' AS TEXT)")
_QUOTED_TEXT_OVERHEAD = len("''")


def needs_hex(text: str) -> bool:
    return any(char in text for char in _NOT_QUOTABLE)


def hex_text_literal(text: str) -> str:
    return f"CAST(X'{text.encode('utf-8').hex().upper()}' AS TEXT)"


def literal_bytes(text: str, *, hex_form: bool) -> int:
    """Size in UTF-8 bytes of the literal that renders `text` (quoted form: quotes doubled)."""
    size = len(text.encode("utf-8"))
    if hex_form:
        return _HEX_TEXT_OVERHEAD + 2 * size
    return _QUOTED_TEXT_OVERHEAD + size + text.count("'")


class LiteralRenderer:
    """Renders values as SQL literals with SQLite's own quote(), on a private in-memory connection."""

    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:")

    def close(self) -> None:
        self._conn.close()

    def render(self, values: Sequence[SqlValue]) -> list[str]:
        """One literal per value, in order (one round trip to SQLite for the whole row)."""
        special = [_special_literal(value) for value in values]
        quoted = iter(self._quote([value for value, literal in zip(values, special, strict=True) if literal is None]))
        return [literal if literal is not None else next(quoted) for literal in special]

    def _quote(self, values: list[SqlValue]) -> list[str]:
        if not values:
            return []
        placeholders = ", ".join("quote(?)" for _ in values)
        return [str(literal) for literal in self._conn.execute(f"SELECT {placeholders}", values).fetchone()]

    def render_one(self, value: SqlValue) -> str:
        return self.render([value])[0]


def _special_literal(value: SqlValue) -> str | None:
    """The literal of a value quote() cannot render exactly; None for everything quote() renders."""
    if isinstance(value, str) and needs_hex(value):
        return hex_text_literal(value)
    if isinstance(value, float) and math.isinf(value):
        return "9e999" if value > 0 else "-9e999"  # quote() writes Inf, which SQLite cannot read back
    return None


def split_text(text: str, max_literal_bytes: int) -> list[str]:
    """Cut `text` at character boundaries into pieces whose literals are at most `max_literal_bytes`.

    Sizes are counted in the form the whole text needs, so a piece rendered on its own never exceeds
    them (the hex form costs at least as much as the quoted one for every character).
    """
    hex_form = needs_hex(text)
    if max_literal_bytes < _HEX_TEXT_OVERHEAD + 8:
        raise ValueError(f"a literal budget of {max_literal_bytes} bytes cannot hold a character")
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = _piece_end(text, start, max_literal_bytes, hex_form)
        pieces.append(text[start:end])
        start = end
    return pieces


def _piece_end(text: str, start: int, budget: int, hex_form: bool) -> int:
    # Every character costs at least one byte: start from the most that could fit, then shrink in
    # proportion to the overshoot (a few passes, not one per character).
    length = min(len(text) - start, budget)
    while length > 1:
        size = literal_bytes(text[start : start + length], hex_form=hex_form)
        if size <= budget:
            break
        length = max(1, min(length - 1, length * budget // size))
    return start + length
