"""Validation of names that become paths, object keys or catalog ids."""

from __future__ import annotations

import re
import unicodedata

_FORBIDDEN_ID_CHARS = set(":/\\?#[]@!$&'()*+,;=\"<>|%`^{} ")
_FORBIDDEN_ID_RE = re.compile("[" + re.escape("".join(sorted(_FORBIDDEN_ID_CHARS))) + "]")
_CONTROL_RE = re.compile("[\x00-\x1f\x7f]")
_INVISIBLE = {"Cf": "an invisible format character", "Cs": "a lone surrogate"}
MAX_NAME_BYTES = 255  # a file name (one path component) on Linux file systems
MAX_KEY_BYTES = 1024  # an S3 object key, its prefix included


class UnsafeNameError(ValueError):
    """A name that cannot safely become a path component, object key or catalog id."""


def normal_name(name: str) -> str:
    """``name`` in Unicode NFC, the one spelling of names that look the same (a composed
    ``É`` and ``E`` + a combining acute accent)."""
    return unicodedata.normalize("NFC", name)


def describe_char(char: str) -> str:
    """A character as its code point and name: ``U+202E RIGHT-TO-LEFT OVERRIDE``."""
    return f"U+{ord(char):04X} {unicodedata.name(char, '')}".rstrip()


def spelling(name: str) -> str:
    """``name`` with each non-ASCII character as its code point: ``CAFE<U+0301>``."""
    return "".join(c if c.isascii() else f"<U+{ord(c):04X}>" for c in name)


def same_after_nfc(what: str, first: str, later: str) -> str:
    """A message: ``later`` is ``first`` spelled with other code points (NFC makes them one)."""
    return (
        f"{what} {spelling(later)!r} is {spelling(first)!r} spelled with other code points: "
        "the two are the same after NFC normalisation"
    )


def utf8_size(text: str) -> int:
    """The bytes ``text`` takes in UTF-8 (a lone surrogate counts 3)."""
    return len(text.encode("utf-8", "surrogatepass"))


def check_safe_name(name: object, what: str, reserved: int = 0) -> str:
    """Return ``name`` if it is a safe single path component, else raise :class:`UnsafeNameError`.

    Refused: empty names, ``.`` and ``..``, separators (``/``, ``\\``), control characters
    (including NUL), format characters (Unicode category Cf: bidi overrides, zero-width
    characters, BOM), lone surrogates, and names over 255 bytes in UTF-8, less ``reserved``:
    the bytes temporary names made from it add. ``what`` names the field in the message.
    """
    if not isinstance(name, str) or not name:
        raise UnsafeNameError(f"{what} must be a non-empty string, got {name!r}")
    size, limit = utf8_size(name), MAX_NAME_BYTES - reserved
    if size > limit:
        added = f" and temporary names made from it add {reserved} bytes" if reserved else ""
        raise UnsafeNameError(
            f"{what} {name[:40]!r}... is {size} bytes long in UTF-8 ({len(name)} characters); "
            f"file names may have at most {MAX_NAME_BYTES} bytes{added}: shorten it to "
            f"{limit} bytes or less"
        )
    if name in {".", ".."} or name.startswith(".."):
        raise UnsafeNameError(f"{what} {name!r} is a relative path component; use a plain name")
    if _CONTROL_RE.search(name):
        raise UnsafeNameError(f"{what} {name!r} contains a control character; remove it")
    for char in "" if name.isascii() else name:  # ASCII has no Cf or Cs character
        kind = _INVISIBLE.get(unicodedata.category(char))
        if kind is not None:
            raise UnsafeNameError(
                f"{what} {name!r} contains {describe_char(char)}, {kind}; remove it"
            )
    if "/" in name or "\\" in name:
        raise UnsafeNameError(f"{what} {name!r} contains a path separator; use a plain name")
    return name


def check_item_id(item_id: object, reserved: int = 0) -> str:
    """Validate a STAC item id used as a directory name and a catalog id.

    On top of :func:`check_safe_name` (``reserved`` as there), refuses the characters pgstac
    and URLs cannot carry (``: / ? # [ ] @ ! $ & ' ( ) * + , ; =``, quotes, spaces, ...).
    """
    name = check_safe_name(item_id, "item id", reserved)
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
