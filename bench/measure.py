"""Run one contender as a child process and measure it with ``os.wait4``: wall seconds from
fork to exit (start-up included), user + system CPU seconds and peak RSS of the process and
of the children it waited for.

Linux counts the parent's peak RSS at fork (or vfork) time in the child's ``ru_maxrss``, so a
contender is not started by the benchmark process itself but by a small launcher
(``python -I -S``, about 5 MiB): that is the floor of every peak RSS figure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# argv: result file, folder to run in, command...
_LAUNCHER = """
import json, os, sys, time
result, cwd, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.chdir(cwd)
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(result, "w") as f:
    json.dump({"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
               "maxrss_kib": usage.ru_maxrss, "exit_code": os.waitstatus_to_exitcode(status)}, f)
"""


@dataclass
class Measurement:
    """One run of one contender."""

    wall_s: float
    cpu_s: float
    rss_mib: float
    exit_code: int
    report: dict[str, Any] = field(default_factory=dict)  # what a worker printed (JSON)
    output: str = ""  # the tail of stdout + stderr, for errors

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def run_measured(
    cmd: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 1800.0,
) -> Measurement:
    """Run ``cmd`` in ``cwd`` under the launcher, in a process group of its own; stdout and
    stderr go to ``log_path``. A worker's report is its last stdout line that is a JSON object."""
    result = log_path.with_suffix(".rusage.json")
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(result), str(cwd), *cmd]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            launcher,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timer = threading.Timer(timeout_s, _kill_group, (proc.pid,))
        timer.daemon = True
        timer.start()
        try:
            proc.wait()
        except BaseException:  # e.g. Ctrl-C: never leave the contender running
            _kill_group(proc.pid)
            proc.wait()
            raise
        finally:
            timer.cancel()
    text = log_path.read_text(errors="replace")
    try:
        usage = json.loads(result.read_text())
    except (OSError, ValueError):
        usage = {"wall_s": 0.0, "cpu_s": 0.0, "maxrss_kib": 0, "exit_code": proc.returncode or 1}
    return Measurement(
        wall_s=usage["wall_s"],
        cpu_s=usage["cpu_s"],
        rss_mib=usage["maxrss_kib"] / 1024,  # KiB on Linux
        exit_code=usage["exit_code"],
        report=_last_json(text),
        output=text[-3000:],
    )


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                return doc
    return {}
