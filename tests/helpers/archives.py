"""Archive builders shared by tests/test_archives.py and tests/test_hostile.py: real zip and tar
files, including members no well-behaved archiver writes (slips, links, devices)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Literal

TarMode = Literal["w", "w:gz"]


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def tar_file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def tar_special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: TarMode = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def tar_of(path: Path, files: dict[str, bytes], mode: TarMode = "w") -> Path:
    return make_tar(path, [tar_file(n, d) for n, d in files.items()], mode)


def zip_special(path: Path, file_type: int) -> Path:
    info = zipfile.ZipInfo("special")
    info.external_attr = (file_type | 0o777) << 16
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    return path
