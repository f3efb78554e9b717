"""Text for messages and ``repr``: one line, bounded, secrets masked."""

from __future__ import annotations

MESSAGE_CHARS = 300


def shorten(text: str) -> str:
    """``text`` on one line, at most :data:`MESSAGE_CHARS` characters (for error messages)."""
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


def mask_secret(secret: str | None) -> str:
    """How a secret field shows in a ``repr``: ``'***'`` when set."""
    return "'***'" if secret else "None"


def size_text(n_bytes: float) -> str:
    """A byte count (or rate) for people, in binary units: ``512 B``, ``1.2 MiB``, ``3.4 GiB``."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
