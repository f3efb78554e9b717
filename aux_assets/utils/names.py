"""Validation of names that become paths, object keys or catalog ids."""

from __future__ import annotations

import re

_FORBIDDEN_ID_CHARS = set(":/\\?#[]@!$&'()*+,;=\"<>|%`^{} ")
_FORBIDDEN_ID_RE = re.compile("[" + re.escape("".join(sorted(_FORBIDDEN_ID_CHARS))) + "]")
_CONTROL_RE = re.compile("[\x00-\x1f\x7f]")
_MAX_NAME = 255


class UnsafeNameError(ValueError):
    """A name that cannot safely become a path component, object key or catalog id."""


def check_safe_name(name: object, what: str) -> str:
    """Return ``name`` if it is a safe single path component, else raise :class:`UnsafeNameError`.

    Refused: empty names, ``.`` and ``..``, separators (``/``, ``\\``), control characters
    (including NUL) and names longer than 255 characters. ``what`` names the field in the message.
    """
    if not isinstance(name, str) or not name:
        raise UnsafeNameError(f"{what} must be a non-empty string, got {name!r}")
    if len(name) > _MAX_NAME:
        raise UnsafeNameError(f"{what} {name[:40]!r}... is longer than {_MAX_NAME} characters")
    if name in {".", ".."} or name.startswith(".."):
        raise UnsafeNameError(f"{what} {name!r} is a relative path component; use a plain name")
    if _CONTROL_RE.search(name):
        raise UnsafeNameError(f"{what} {name!r} contains a control character; remove it")
    if "/" in name or "\\" in name:
        raise UnsafeNameError(f"{what} {name!r} contains a path separator; use a plain name")
    return name


def check_item_id(item_id: object) -> str:
    """Validate a STAC item id used as a directory name and a catalog id.

    On top of :func:`check_safe_name`, refuses the characters pgstac and URLs cannot carry
    (``: / ? # [ ] @ ! $ & ' ( ) * + , ; =``, quotes, spaces, ...).
    """
    name = check_safe_name(item_id, "item id")
    bad = sorted(set(_FORBIDDEN_ID_RE.findall(name)))
    if bad:
        raise UnsafeNameError(
            f"item id {name!r} contains {''.join(bad)!r}; ids may only use letters, digits, "
            "'.', '-' and '_'"
        )
    return name


_COLLECTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_collection_id(collection_id: object) -> str:
    """Validate a catalog collection id (letters, digits, ``.``, ``-``, ``_``)."""
    name = check_safe_name(collection_id, "collection id")
    if not _COLLECTION_RE.match(name):
        raise UnsafeNameError(
            f"collection id {name!r} must start with a letter or digit and use only letters, "
            "digits, '.', '-' and '_'"
        )
    return name


_MISSION_UNIT_RE = re.compile(r"^S(\d)([A-Z_])_")


def platform_of_name(name: str) -> tuple[str, str | None] | None:
    """The mission and the unit a Sentinel file name starts with, as STAC names them.

    ``S1A_OPER_AUX_POEORB_...`` -> ``("sentinel-1", "sentinel-1a")``; a file of the whole
    constellation, ``S2__OPER_AUX_ECMWFD_...`` or ``S3__AX___MA1_AX_...``, ->
    ``("sentinel-2", None)``; ``None`` when the name starts with no mission.
    """
    match = _MISSION_UNIT_RE.match(name)
    if match is None:
        return None
    mission = f"sentinel-{match[1]}"
    unit = match[2]
    return mission, None if unit == "_" else f"{mission}{unit.lower()}"
