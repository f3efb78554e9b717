"""URLs parsed one way everywhere: local paths from ``file://`` URLs and plain paths (and whether
they lie in the folders a source may read), origins (what credentials are bound to), hrefs
without their userinfo, and URLs safe for messages."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

from aux_assets.settings import LOCAL_FILE_ROOTS_ENV

_DEFAULT_PORTS = {"http": 80, "https": 443}


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


def confined_path(url: str, roots: Sequence[Path]) -> Path:
    """The real path (symlinks resolved) of the ``file://`` ``url`` if it lies in one of the
    folders ``roots`` (resolved too); else :class:`LocalURLError` naming the path, the folders
    and the variable that allows more."""
    path = file_path(url)
    if path is None:
        raise LocalURLError(f"{redact_url(url)} is not a file:// URL")
    real = Path(os.path.realpath(path))
    folders = [Path(os.path.realpath(root)) for root in roots]
    if any(real.is_relative_to(folder) for folder in folders):
        return real
    resolved = f" (resolved: {real})" if real != path else ""
    raise LocalURLError(
        f"{path}{resolved} is outside the folders this source may read "
        f"({', '.join(map(str, folders)) or 'none'}); to allow it, add a folder holding it to "
        f"{LOCAL_FILE_ROOTS_ENV} (absolute paths separated by {os.pathsep!r})"
    )


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


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` with a lower-case host and the default port left out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def redact_url(url: str) -> str:
    """``url`` without userinfo, query string or fragment, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_urls(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`): for messages that quote
    errors, whose text may hold a signed query or a ``user:password@``."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match[0]), text)


def href_file_name(href: str) -> str:
    """The last segment of an href's path, unquoted: the file name it points at."""
    return PurePosixPath(unquote(urlparse(href).path)).name
