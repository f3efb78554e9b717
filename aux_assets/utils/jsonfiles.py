"""JSON documents written atomically: a temporary file, fsync, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any


def temp_name(name: str) -> str:
    """A fresh hidden name to write the file ``name`` under before renaming it."""
    return f".{name}.{secrets.token_hex(4)}.tmp"


def write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` to ``path`` so that readers see the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        # compact: only then does json use its C encoder (5-10x faster than with an indent)
        data = json.dumps(doc, separators=(",", ":")).encode()
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
