"""Settings from the environment that both layers read: the home folder, the first partition
day, the clock, positive whole numbers, the folders local sources may also read, and the names and
defaults of the transfer bounds. A bad value is an error naming the variable and the fix."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from aux_assets.utils.times import parse_utc

DEFAULT_START = "2026-01-01"  # first day of the embedded sample (aux_assets.sample.DEFAULT_START)
LOCAL_FILE_ROOTS_ENV = "AUX_LOCAL_FILE_ROOTS"
MAX_UNSIZED_BYTES_ENV = "AUX_MAX_UNSIZED_BYTES"
DEFAULT_MAX_UNSIZED_BYTES = 8 << 30  # 8 GiB: the largest file whose item gives no file:size
NOW_ENV = "AUX_NOW"
TRANSFER_TIMEOUT_ENV = "AUX_TRANSFER_TIMEOUT_S"
DEFAULT_TRANSFER_TIMEOUT_S = 3600  # one file, all its attempts together


def aux_home(env: Mapping[str, str] | None = None) -> Path:
    """``AUX_ASSETS_HOME`` (default ``./.aux_assets``), absolute."""
    env = os.environ if env is None else env
    return Path(env.get("AUX_ASSETS_HOME") or ".aux_assets").resolve()


def partitions_start(value: str | None = None) -> str:
    """``AUX_PARTITIONS_START`` validated as ``YYYY-MM-DD`` (default: the demo data's first day)."""
    text = value if value is not None else os.environ.get("AUX_PARTITIONS_START", DEFAULT_START)
    try:
        date.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"AUX_PARTITIONS_START={text!r} is not a date; use YYYY-MM-DD, e.g. 2026-01-01"
        ) from None
    return text


def now(env: Mapping[str, str] | None = None) -> datetime:
    """The time the project takes as now: ``AUX_NOW`` (an ISO 8601 instant, UTC when no offset
    is given) when set, else the system clock. Setting it replays the embedded sample's
    publication clock at that instant (demos, tests); leave it unset in operations."""
    text = (os.environ if env is None else env).get(NOW_ENV)
    if not text:
        return datetime.now(UTC)
    try:
        return parse_utc(text).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(
            f"{NOW_ENV}={text!r} is not a time; use ISO 8601, e.g. 2026-02-01T00:00:00Z, "
            "or unset it to follow the system clock"
        ) from None


def choice_env(env: Mapping[str, str], name: str, default: str, choices: Sequence[str]) -> str:
    """``env[name]`` if it is one of ``choices``, ``default`` when unset or empty; otherwise an
    error that names the variable and the choices."""
    text = env.get(name) or default
    if text not in choices:
        raise ValueError(f"{name}={text!r} is not one of {', '.join(choices)}; use one of them")
    return text


def positive_int_env(env: Mapping[str, str] | None, name: str, default: int, unit: str) -> int:
    """The positive whole number in ``env[name]`` (default: the process environment), or
    ``default`` when unset or empty; otherwise an error that names the variable."""
    text = (os.environ if env is None else env).get(name) or str(default)
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"{name}={text!r} must be a positive whole number of {unit}, e.g. {default}"
        )
    return int(text)


def local_file_roots(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """``AUX_LOCAL_FILE_ROOTS``: absolute folders (separated by ``os.pathsep``) whose files
    local sources may read besides their own folder, symlinks resolved; none when unset. A
    relative entry, or one that is no folder, is an error naming the variable."""
    text = (os.environ if env is None else env).get(LOCAL_FILE_ROOTS_ENV) or ""
    roots: list[Path] = []
    for entry in text.split(os.pathsep) if text else []:
        if not os.path.isabs(entry) or not os.path.isdir(entry):
            problem = "is not an absolute path" if not os.path.isabs(entry) else "is no folder"
            raise ValueError(
                f"{LOCAL_FILE_ROOTS_ENV}={text!r}: entry {entry!r} {problem}; give existing "
                f"folders as absolute paths separated by {os.pathsep!r}"
            )
        roots.append(Path(os.path.realpath(entry)))
    return tuple(roots)
