"""Safe extraction of downloaded archives (zip, tar, tgz / tar.gz, single gz).

Every member is validated before anything is written; sizes are counted while writing; the tree
is built in a temporary sibling directory and renamed to its destination only on success.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import lzma
import os
import re
import secrets
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from pathlib import Path, PurePosixPath
from typing import IO, Protocol, cast

from aux_assets.utils.names import UnsafeNameError, check_safe_name

# suffix -> format; longest suffixes first so that ".tar.gz" wins over ".gz"
_FORMAT_OF: dict[str, str] = {
    ".tar.gz": "tar",
    ".tgz": "tar",
    ".tar": "tar",
    ".zip": "zip",
    ".gz": "gz",
}
ARCHIVE_SUFFIXES: tuple[str, ...] = tuple(_FORMAT_OF)
_NESTED_SUFFIXES = (".tar.gz", ".tgz", ".tar")  # nested zip and gz files are left as they are
_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_CORRUPT = (
    zipfile.BadZipFile,
    lzma.LZMAError,
    tarfile.TarError,
    gzip.BadGzipFile,
    EOFError,
    zlib.error,
    NotImplementedError,  # e.g. an unsupported zip compression method
)
_CONFLICT = (FileExistsError, NotADirectoryError, IsADirectoryError)
_ZIP_ENCRYPTED = 0x1


class ArchiveError(ValueError):
    """An archive that is corrupt, unsafe, or over a :class:`Limits` bound; nothing was kept."""


@dataclass(frozen=True)
class Limits:
    """Bounds for one extraction, nested archives included (cumulative).

    ``max_total_bytes`` and ``max_ratio`` (times the outer archive's size on disk) bound the bytes
    written; ``max_members`` bounds the member entries; ``max_depth`` is the deepest nesting level
    unpacked (the outer archive is level 0, a tar inside it level 1, ...).
    """

    max_total_bytes: int = 8 * 1024**3
    max_ratio: float = 200.0
    max_members: int = 100_000
    max_depth: int = 3


@dataclass(frozen=True)
class ExtractedFile:
    """A regular file of the extracted tree; ``sha256`` was computed while writing it."""

    path: PurePosixPath
    size: int
    sha256: str


class _Stream(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class _Entry:
    """One archive member: stored name (for messages), kind, declared size and an opener."""

    name: str
    is_dir: bool
    size: int
    open: Callable[[], _Stream]


@dataclass
class _Budget:
    """Running totals shared by an archive and every archive nested in it."""

    limits: Limits
    archive_size: int
    written: int = 0
    members: int = 0

    def add_member(self, label: str, name: str) -> None:
        """Count one member; refuse the archive past ``max_members``."""
        self.members += 1
        if self.members > self.limits.max_members:
            raise _error(label, name, f"more than max_members={self.limits.max_members} members")

    def check_total(self, total: int, label: str, name: str, what: str) -> None:
        """Refuse ``total`` bytes if over ``max_total_bytes`` or ``max_ratio`` x archive size."""
        lim = self.limits
        if total > lim.max_total_bytes:
            raise _error(
                label, name, f"{what} {total} bytes, over max_total_bytes={lim.max_total_bytes}"
            )
        if total > lim.max_ratio * self.archive_size:
            raise _error(
                label,
                name,
                f"{what} {total} bytes, over max_ratio={lim.max_ratio} x {self.archive_size} "
                "bytes on disk (possible archive bomb)",
            )

    def add_written(self, n: int, label: str, name: str) -> None:
        """Count ``n`` bytes about to be written."""
        self.written += n
        self.check_total(self.written, label, name, "extracted data reaches")


def _error(archive: str, member: str | None, reason: str) -> ArchiveError:
    where = f"archive {archive!r}" if member is None else f"archive {archive!r}, member {member!r}"
    return ArchiveError(f"{where}: {reason}")


def _suffix(name: str) -> str | None:
    lower = name.lower()
    return next((s for s in ARCHIVE_SUFFIXES if lower.endswith(s)), None)


def is_archive(name: str) -> bool:
    """Whether ``name`` ends with one of :data:`ARCHIVE_SUFFIXES` (any case)."""
    return _suffix(name) is not None


def strip_archive_suffix(name: str) -> str:
    """``name`` without its archive suffix: ``X.SAFE.zip`` -> ``X.SAFE``, ``f.EOF`` unchanged."""
    suffix = _suffix(name)
    return name[: -len(suffix)] if suffix else name


def _member_path(name: str, label: str) -> PurePosixPath | None:
    """The validated relative path of member ``name``; None for the archive root (``./``)."""
    if not name:
        raise _error(label, name, "empty member name")
    if name.startswith("/"):
        raise _error(label, name, "absolute path")
    if "\\" in name:
        raise _error(label, name, "backslash in path")
    if _DRIVE.match(name):
        raise _error(label, name, "path starts with a drive letter")
    parts = [p for p in name.removesuffix("/").split("/") if p != "."]
    for part in parts:
        try:
            check_safe_name(part, "path component")
        except UnsafeNameError as exc:
            raise _error(label, name, str(exc)) from None
    return PurePosixPath(*parts) if parts else None


def _zip_entries(zf: zipfile.ZipFile, label: str) -> Iterator[_Entry]:
    for info in zf.infolist():
        file_type = stat.S_IFMT(info.external_attr >> 16)
        if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
            kind = "a symbolic link" if file_type == stat.S_IFLNK else f"of type {oct(file_type)}"
            raise _error(label, info.filename, f"is {kind}; only files and dirs are allowed")
        if info.flag_bits & _ZIP_ENCRYPTED:
            raise _error(label, info.filename, "encrypted members are not supported")
        yield _Entry(info.filename, info.is_dir(), info.file_size, partial(zf.open, info))


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.issym():
        return f"a symbolic link (to {info.linkname!r})"
    if info.islnk():
        return f"a hard link (to {info.linkname!r})"
    if info.ischr():
        return "a character device"
    if info.isblk():
        return "a block device"
    if info.isfifo():
        return "a FIFO"
    return f"of unsupported tar type {info.type!r}"


def _tar_entries(tf: tarfile.TarFile, label: str) -> Iterator[_Entry]:
    for info in tf:
        if not (info.isreg() or info.isdir()):
            raise _error(label, info.name, f"is {_tar_kind(info)}; only files and dirs are allowed")
        opener = partial(cast(Callable[[tarfile.TarInfo], IO[bytes]], tf.extractfile), info)
        yield _Entry(info.name, info.isdir(), info.size if info.isreg() else 0, opener)


def _plan(
    entries: Iterable[_Entry], label: str, budget: _Budget
) -> list[tuple[PurePosixPath, _Entry]]:
    """Validate every member (path, type, count, declared sizes) before anything is written."""
    planned: list[tuple[PurePosixPath, _Entry]] = []
    declared = budget.written
    for entry in entries:
        budget.add_member(label, entry.name)
        path = _member_path(entry.name, label)
        if path is None:
            if not entry.is_dir:
                raise _error(label, entry.name, "member names no file")
            continue
        declared += entry.size
        budget.check_total(declared, label, entry.name, "declared sizes reach")
        planned.append((path, entry))
    return planned


def _copy(src: _Stream, target: Path, label: str, name: str, budget: _Budget) -> tuple[int, str]:
    """Stream ``src`` into a new file ``target``, counting bytes; return (size, sha256)."""
    digest = hashlib.sha256()
    size = 0
    with open(target, "xb") as out:
        while chunk := src.read(_CHUNK):
            budget.add_written(len(chunk), label, name)
            size += len(chunk)
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def _write(
    planned: list[tuple[PurePosixPath, _Entry]],
    root: Path,
    into: PurePosixPath,
    label: str,
    budget: _Budget,
) -> dict[PurePosixPath, ExtractedFile]:
    """Write planned members under ``root / into``; return the regular files written."""
    files: dict[PurePosixPath, ExtractedFile] = {}
    for path, entry in planned:
        rel = into / path
        target = root / rel
        try:
            if entry.is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(entry.open()) as src:
                size, sha256 = _copy(src, target, label, entry.name, budget)
        except _CONFLICT:
            raise _error(label, entry.name, f"conflicts with existing path {str(rel)!r}") from None
        files[rel] = ExtractedFile(rel, size, sha256)
    return files


def _extract_into(
    archive: Path, fmt: str, root: Path, into: PurePosixPath, label: str, budget: _Budget
) -> dict[PurePosixPath, ExtractedFile]:
    """Validate then extract one archive of format ``fmt`` under ``root / into``."""
    try:
        with contextlib.ExitStack() as stack:
            entries: Iterable[_Entry]
            if fmt == "zip":
                entries = _zip_entries(stack.enter_context(zipfile.ZipFile(archive)), label)
            elif fmt == "tar":
                entries = _tar_entries(stack.enter_context(tarfile.open(archive, "r:*")), label)
            else:
                opener = partial(gzip.open, archive, "rb")
                entries = [
                    _Entry(strip_archive_suffix(PurePosixPath(label).name), False, 0, opener)
                ]
            return _write(_plan(entries, label, budget), root, into, label, budget)
    except _CORRUPT as exc:
        raise _error(label, None, f"cannot read {fmt} archive: {exc}") from exc


def _is_nested(name: str) -> bool:
    return name.lower().endswith(_NESTED_SUFFIXES)


def _extract_nested(
    root: Path, files: dict[PurePosixPath, ExtractedFile], label: str, budget: _Budget
) -> None:
    """Unpack tar/tgz files of the tree next to themselves, recursively, then delete them."""
    pending = [(rel, 1) for rel in files if _is_nested(rel.name)]
    while pending:
        rel, level = pending.pop()
        nested_label = f"{label} > {rel}"
        if level > budget.limits.max_depth:
            raise _error(
                nested_label, None, f"nested deeper than max_depth={budget.limits.max_depth}"
            )
        new = _extract_into(root / rel, "tar", root, rel.parent, nested_label, budget)
        (root / rel).unlink()
        del files[rel]
        files.update(new)
        pending.extend((path, level + 1) for path in new if _is_nested(path.name))


def extract_temp_name(name: str) -> str:
    """A fresh hidden name for the folder an archive is unpacked into before it is renamed
    ``name``."""
    return f".{name}.extract-{secrets.token_hex(8)}"


def extract_archive(
    archive: Path, dest: Path, limits: Limits = Limits(), name: str | None = None
) -> list[ExtractedFile]:
    """Extract ``archive`` to ``dest`` (which must not exist), all or nothing.

    The format follows the suffix of ``name`` (default: the file's own name; give it when the
    file is a ``.part``): zip, tar, tgz / tar.gz, single gz. Unsafe members (absolute
    or ``..`` paths, links, devices, FIFOs, ...) refuse the whole archive before anything is
    written. Nested tar/tgz files are unpacked next to themselves and removed (zip files are not).
    Returns the regular files of the final tree, sorted by path. Raises :class:`ArchiveError`.
    """
    label = name or archive.name
    suffix = _suffix(label)
    if suffix is None:
        raise _error(label, None, f"unknown archive type; expected one of {ARCHIVE_SUFFIXES}")
    if os.path.lexists(dest):
        raise _error(label, None, f"destination {str(dest)!r} already exists")
    budget = _Budget(limits, archive.stat().st_size)
    tmp = dest.with_name(extract_temp_name(dest.name))
    tmp.mkdir()
    try:
        files = _extract_into(archive, _FORMAT_OF[suffix], tmp, PurePosixPath(), label, budget)
        _extract_nested(tmp, files, label, budget)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(files.values(), key=attrgetter("path"))
