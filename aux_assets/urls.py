"""Local paths from ``file://`` URLs and plain paths, parsed one way everywhere."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse


class LocalURLError(ValueError):
    """A ``file://`` URL that does not name a local path."""


def file_path(url: str) -> Path | None:
    """The local path of a ``file://`` URL (``None`` for any other scheme)."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return None
    if parsed.netloc not in {"", "localhost"}:
        raise LocalURLError(f"{url!r} names host {parsed.netloc!r}; use file:///absolute/path")
    return Path(unquote(parsed.path))


def local_path(value: str) -> Path | None:
    """A ``file://`` URL or a plain path as a local path; ``None`` for other schemes."""
    if "://" not in value:
        return Path(value).expanduser().resolve()
    return file_path(value)
