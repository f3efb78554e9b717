"""Tests for aux_assets.staging.archives: real archives built in tmp_path."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from aux_assets.staging.archives import (
    ARCHIVE_SUFFIXES,
    ArchiveError,
    ExtractedFile,
    Limits,
    extract_archive,
    is_archive,
    strip_archive_suffix,
)
from tests.helpers.archives import (
    TarMode,
    make_tar,
    make_zip,
    tar_file,
    tar_of,
    tar_special,
    zip_special,
)

MANIFEST = b"<xfdu:XFDU>manifest</xfdu:XFDU>\n"
DATA = bytes(range(256)) * 40


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_nothing_left(dest: Path) -> None:
    assert not os.path.lexists(dest)
    assert [p.name for p in dest.parent.iterdir() if ".extract-" in p.name] == []


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty parent directory for destinations, apart from the source archives."""
    path = tmp_path / "out"
    path.mkdir()
    return path


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stripped", "archive"),
    [
        ("X.SAFE.zip", "X.SAFE", True),
        ("x.TGZ", "x", True),
        ("a.tar.gz", "a", True),
        ("a.TAR.GZ", "a", True),
        ("b.tar", "b", True),
        ("c.tgz", "c", True),
        ("S3A_AUX.SEN3.zip", "S3A_AUX.SEN3", True),
        ("f.EOF.gz", "f.EOF", True),
        ("f.EOF", "f.EOF", False),
        ("x.SAFE", "x.SAFE", False),
        ("x.tar.bz2", "x.tar.bz2", False),
        ("zipfile", "zipfile", False),
    ],
)
def test_suffix_table(name: str, stripped: str, archive: bool) -> None:
    assert strip_archive_suffix(name) == stripped
    assert is_archive(name) is archive


def test_archive_suffixes() -> None:
    assert ARCHIVE_SUFFIXES == (".tar.gz", ".tgz", ".tar", ".zip", ".gz")


# --- happy paths ------------------------------------------------------------------------------


def test_zip_safe_directory(tmp_path: Path, out: Path) -> None:
    name = "S1A_AUX_CAL_V20190228T092500_G20240327T102320.SAFE"
    archive = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}/", b"")
        zf.writestr(f"{name}/manifest.safe", MANIFEST)
        zf.writestr(f"{name}/data/s1a-aux-cal.xml", DATA)
    dest = out / strip_archive_suffix(archive.name)

    files = extract_archive(archive, dest)

    assert files == [
        ExtractedFile(PurePosixPath(f"{name}/data/s1a-aux-cal.xml"), len(DATA), sha(DATA)),
        ExtractedFile(PurePosixPath(f"{name}/manifest.safe"), len(MANIFEST), sha(MANIFEST)),
    ]
    assert (dest / name / "manifest.safe").read_bytes() == MANIFEST
    assert (dest / name / "data" / "s1a-aux-cal.xml").read_bytes() == DATA
    assert [p.name for p in out.iterdir()] == [dest.name]


@pytest.mark.parametrize(
    ("filename", "mode"),
    [("a.tar", "w"), ("a.tgz", "w:gz"), ("a.tar.gz", "w:gz"), ("A.TGZ", "w:gz")],
)
def test_tar_formats(tmp_path: Path, out: Path, filename: str, mode: TarMode) -> None:
    archive = make_tar(
        tmp_path / filename,
        [tar_special("dir", tarfile.DIRTYPE), tar_file("dir/x.EOF", DATA), tar_file("y", b"")],
        mode,
    )
    dest = out / "a"

    files = extract_archive(archive, dest)

    assert files == [
        ExtractedFile(PurePosixPath("dir/x.EOF"), len(DATA), sha(DATA)),
        ExtractedFile(PurePosixPath("y"), 0, sha(b"")),
    ]
    assert (dest / "dir" / "x.EOF").read_bytes() == DATA
    assert_nothing_left(out / ".a")  # no temp dir next to dest


def test_tar_with_dot_prefix(tmp_path: Path, out: Path) -> None:
    """``tar -C dir -czf x.tgz .`` stores ``.`` and ``./name``; both are fine."""
    archive = make_tar(
        tmp_path / "dot.tgz",
        [tar_special(".", tarfile.DIRTYPE), tar_file("./sub/./f", DATA)],
        "w:gz",
    )
    files = extract_archive(archive, out / "dot")
    assert [f.path for f in files] == [PurePosixPath("sub/f")]


def test_single_gz(tmp_path: Path, out: Path) -> None:
    archive = tmp_path / "S1A_OPER_AUX_POEORB.EOF.GZ"
    archive.write_bytes(gzip.compress(DATA))
    dest = out / "orbit"

    files = extract_archive(archive, dest)

    assert files == [ExtractedFile(PurePosixPath("S1A_OPER_AUX_POEORB.EOF"), len(DATA), sha(DATA))]
    assert (dest / "S1A_OPER_AUX_POEORB.EOF").read_bytes() == DATA


def test_nested_tgz_extracted_and_zip_left_alone(tmp_path: Path, out: Path) -> None:
    deepest = tar_of(tmp_path / "deep.tar", {"deep.txt": b"deep"})
    inner = make_tar(
        tmp_path / "inner.tgz",
        [tar_file("a.txt", b"a"), tar_file("sub/deep.tar", deepest.read_bytes())],
        "w:gz",
    )
    keep = make_zip(tmp_path / "keep.zip", {"z.txt": b"z"})
    outer = tar_of(
        tmp_path / "outer.tar",
        {"dir/inner.tgz": inner.read_bytes(), "keep.zip": keep.read_bytes(), "top": b"t"},
    )
    dest = out / "outer"

    files = extract_archive(outer, dest)

    assert {str(f.path): f.sha256 for f in files} == {
        "dir/a.txt": sha(b"a"),
        "dir/sub/deep.txt": sha(b"deep"),
        "keep.zip": sha(keep.read_bytes()),
        "top": sha(b"t"),
    }
    assert [f.path for f in files] == sorted(f.path for f in files)
    assert not (dest / "dir" / "inner.tgz").exists()
    assert not (dest / "dir" / "sub" / "deep.tar").exists()
    assert (dest / "dir" / "sub" / "deep.txt").read_bytes() == b"deep"
    assert (dest / "keep.zip").read_bytes() == keep.read_bytes()


# --- refusals ---------------------------------------------------------------------------------


REFUSED = [
    pytest.param(
        lambda p: make_zip(p / "a.zip", {"ok": b"1", "../evil.txt": b"x"}),
        "../evil.txt",
        "relative path component",
        id="zip-slip",
    ),
    pytest.param(
        lambda p: make_zip(p / "a.zip", {"a/../../evil": b"x"}),
        "a/../../evil",
        "relative path component",
        id="zip-nested-slip",
    ),
    pytest.param(
        lambda p: make_zip(p / "a.zip", {"/etc/evil": b"x"}),
        "/etc/evil",
        "absolute path",
        id="zip-absolute",
    ),
    pytest.param(
        lambda p: make_zip(p / "a.zip", {"..\\evil": b"x"}),
        "..\\evil",
        "backslash",
        id="zip-backslash",
    ),
    pytest.param(
        lambda p: make_zip(p / "a.zip", {"C:/evil": b"x"}),
        "C:/evil",
        "drive letter",
        id="zip-drive",
    ),
    pytest.param(
        lambda p: make_zip(p / "a.zip", {"a\nb": b"x"}),
        "a\nb",
        "control character",
        id="zip-control-char",
    ),
    pytest.param(
        lambda p: make_zip(p / "a.zip", {"a//b": b"x"}),
        "a//b",
        "non-empty",
        id="zip-empty-component",
    ),
    pytest.param(
        lambda p: zip_special(p / "a.zip", stat.S_IFLNK),
        "special",
        "is a symbolic link",
        id="zip-symlink",
    ),
    pytest.param(
        lambda p: zip_special(p / "a.zip", stat.S_IFCHR),
        "special",
        "is of type 0o20000",
        id="zip-char-device",
    ),
    pytest.param(
        lambda p: tar_of(p / "a.tar", {"/etc/evil": b"x"}),
        "/etc/evil",
        "absolute path",
        id="tar-absolute",
    ),
    pytest.param(
        lambda p: tar_of(p / "a.tgz", {"ok": b"1", "../evil": b"x"}, "w:gz"),
        "../evil",
        "relative path component",
        id="tar-dotdot",
    ),
    pytest.param(
        lambda p: make_tar(p / "a.tar", [tar_special("l", tarfile.SYMTYPE, "/etc")]),
        "l",
        "symbolic link (to '/etc')",
        id="tar-symlink",
    ),
    pytest.param(
        lambda p: make_tar(
            p / "a.tar", [tar_file("f", b"1"), tar_special("h", tarfile.LNKTYPE, "f")]
        ),
        "h",
        "hard link",
        id="tar-hardlink",
    ),
    pytest.param(
        lambda p: make_tar(p / "a.tar", [tar_special("c", tarfile.CHRTYPE)]),
        "c",
        "character device",
        id="tar-char-device",
    ),
    pytest.param(
        lambda p: make_tar(p / "a.tar", [tar_special("b", tarfile.BLKTYPE)]),
        "b",
        "block device",
        id="tar-block-device",
    ),
    pytest.param(
        lambda p: make_tar(p / "a.tar", [tar_special("p", tarfile.FIFOTYPE)]),
        "p",
        "FIFO",
        id="tar-fifo",
    ),
    pytest.param(
        lambda p: tar_of(p / "a.tar", {"": b"x"}), "", "empty member name", id="tar-empty-name"
    ),
]


@pytest.mark.parametrize(("build", "member", "reason"), REFUSED)
def test_unsafe_members_refused(
    tmp_path: Path,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
    build: Callable[[Path], Path],
    member: str,
    reason: str,
) -> None:
    archive = build(tmp_path)
    writes: list[int] = []
    monkeypatch.setattr(os, "fsync", writes.append)  # every written file is fsynced
    dest = out / "dest"

    with pytest.raises(ArchiveError) as err:
        extract_archive(archive, dest)

    message = str(err.value)
    assert repr(archive.name) in message
    assert f"member {member!r}" in message
    assert reason in message
    assert writes == []  # refused before anything was written
    assert_nothing_left(dest)


def test_refused_member_names_in_message(tmp_path: Path, out: Path) -> None:
    archive = make_zip(tmp_path / "slip.zip", {"../evil.txt": b"x"})
    with pytest.raises(ArchiveError, match=r"archive 'slip.zip', member '\.\./evil\.txt': "):
        extract_archive(archive, out / "dest")


def test_nested_unsafe_member_refused(tmp_path: Path, out: Path) -> None:
    inner = make_tar(tmp_path / "in.tgz", [tar_special("l", tarfile.SYMTYPE, "/")], "w:gz")
    outer = tar_of(tmp_path / "outer.tar", {"ok": b"1", "d/in.tgz": inner.read_bytes()})
    dest = out / "dest"
    with pytest.raises(ArchiveError, match=r"'outer\.tar > d/in\.tgz', member 'l'.*symbolic"):
        extract_archive(outer, dest)
    assert_nothing_left(dest)


def test_nested_depth_limit(tmp_path: Path, out: Path) -> None:
    level2 = tar_of(tmp_path / "l2.tar", {"x": b"x"})
    level1 = tar_of(tmp_path / "l1.tgz", {"l2.tar": level2.read_bytes()}, "w:gz")
    outer = tar_of(tmp_path / "outer.tar", {"l1.tgz": level1.read_bytes()})
    dest = out / "dest"

    with pytest.raises(ArchiveError, match=r"'outer\.tar > l2\.tar'.*max_depth=1"):
        extract_archive(outer, dest, Limits(max_depth=1))
    assert_nothing_left(dest)

    files = extract_archive(outer, dest, Limits(max_depth=2))
    assert [str(f.path) for f in files] == ["x"]


def write_zeros_zip(path: Path, size: int) -> Path:
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("zeros.bin", "w") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
    return path


def test_zip_bomb_refused_by_ratio(tmp_path: Path, out: Path) -> None:
    archive = write_zeros_zip(tmp_path / "bomb.zip", 50 * 1024**2)
    assert archive.stat().st_size * 200 < 50 * 1024**2
    dest = out / "dest"
    with pytest.raises(ArchiveError, match=r"member 'zeros\.bin': declared .* over max_ratio=200 "):
        extract_archive(archive, dest, Limits(max_ratio=200))
    assert_nothing_left(dest)


def test_refused_by_max_total_bytes(tmp_path: Path, out: Path) -> None:
    archive = tar_of(tmp_path / "big.tar", {"a": bytes(600), "b": bytes(600)})
    dest = out / "dest"
    with pytest.raises(ArchiveError, match=r"member 'b'.*1200 bytes, over max_total_bytes=1000"):
        extract_archive(archive, dest, Limits(max_total_bytes=1000))
    assert_nothing_left(dest)


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (Limits(max_ratio=200), "over max_ratio=200"),
        (Limits(max_total_bytes=3 * 1024**2 + 5, max_ratio=1e6), "over max_total_bytes=3145733"),
    ],
)
def test_gz_bomb_counted_while_writing(
    tmp_path: Path, out: Path, limits: Limits, reason: str
) -> None:
    """A gzip stream declares no size: the real bytes are counted while writing."""
    archive = tmp_path / "bomb.EOF.gz"
    archive.write_bytes(gzip.compress(bytes(8 * 1024**2)))
    dest = out / "dest"
    with pytest.raises(ArchiveError, match=rf"member 'bomb\.EOF'.*extracted data.*{reason}"):
        extract_archive(archive, dest, limits)
    assert_nothing_left(dest)


def test_limits_are_cumulative_over_nested(tmp_path: Path, out: Path) -> None:
    """The bytes of the outer tree count against the nested archive's budget."""
    inner = tar_of(tmp_path / "in.tgz", {"big": bytes(4000)}, "w:gz")
    outer = tar_of(tmp_path / "outer.tar", {"in.tgz": inner.read_bytes()})
    limits = Limits(max_total_bytes=4000)
    assert len(extract_archive(inner, out / "alone", limits)) == 1
    dest = out / "dest"
    with pytest.raises(ArchiveError, match=r"'outer\.tar > in\.tgz', member 'big'.*max_total"):
        extract_archive(outer, dest, limits)
    assert_nothing_left(dest)


def test_max_members(tmp_path: Path, out: Path) -> None:
    archive = make_zip(tmp_path / "many.zip", {f"f{i}": b"x" for i in range(5)})
    dest = out / "dest"
    with pytest.raises(ArchiveError, match=r"member 'f4'.*more than max_members=4"):
        extract_archive(archive, dest, Limits(max_members=4))
    assert_nothing_left(dest)
    assert len(extract_archive(archive, dest, Limits(max_members=5))) == 5


def test_duplicate_member_refused(tmp_path: Path, out: Path) -> None:
    archive = make_tar(tmp_path / "dup.tar", [tar_file("f", b"1"), tar_file("f", b"2")])
    dest = out / "dest"
    with pytest.raises(ArchiveError, match=r"member 'f': conflicts with existing path 'f'"):
        extract_archive(archive, dest)
    assert_nothing_left(dest)


def test_corrupt_archive(tmp_path: Path, out: Path) -> None:
    archive = tmp_path / "broken.SAFE.zip"
    archive.write_bytes(b"not a zip at all")
    dest = out / "dest"
    with pytest.raises(ArchiveError, match=r"archive 'broken\.SAFE\.zip': cannot read zip"):
        extract_archive(archive, dest)
    assert_nothing_left(dest)


def test_truncated_tgz(tmp_path: Path, out: Path) -> None:
    full = tar_of(tmp_path / "full.tgz", {"f": os.urandom(50_000)}, "w:gz").read_bytes()
    archive = tmp_path / "cut.tgz"
    archive.write_bytes(full[: len(full) // 2])
    dest = out / "dest"
    with pytest.raises(ArchiveError, match=r"archive 'cut\.tgz'.*cannot read tar"):
        extract_archive(archive, dest)
    assert_nothing_left(dest)


def test_dest_exists(tmp_path: Path, out: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"f": b"x"})
    dest = out / "dest"
    dest.mkdir()
    (dest / "keep").write_bytes(b"k")
    with pytest.raises(ArchiveError, match="already exists"):
        extract_archive(archive, dest)
    assert [p.name for p in dest.iterdir()] == ["keep"]
    assert [p.name for p in out.iterdir()] == ["dest"]


def test_unknown_suffix(tmp_path: Path, out: Path) -> None:
    archive = tmp_path / "a.tar.bz2"
    archive.write_bytes(b"x")
    with pytest.raises(ArchiveError, match=r"archive 'a\.tar\.bz2': unknown archive type"):
        extract_archive(archive, out / "dest")
    assert_nothing_left(out / "dest")
