"""URLs parsed one way everywhere: local paths from ``file://`` URLs and plain paths, and
hrefs without their userinfo."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit


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


def strip_userinfo(url: str) -> str:
    """``url`` without ``user:password@`` in its authority."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
