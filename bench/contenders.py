"""The contenders, each run once on one data set in a fresh output folder, and what they did."""

from __future__ import annotations

import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.data import DataSet
from bench.measure import Measurement, run_measured

OURS = ("engine", "stager", "dagster")
ALL = ("engine", "stager", "curl", "stac-asset", "dagster")
LABELS = {
    "engine": "aux_assets engine",
    "stager": "aux_assets staging",
    "dagster": "aux_assets assets",
    "curl": "curl --parallel",
    "stac-asset": "stac-asset",
}


@dataclass(frozen=True)
class Setup:
    """Where things are for one benchmark run."""

    repo: Path
    python: str  # the project's interpreter
    curl: str
    stac_asset: str
    concurrency: int
    work: Path  # outputs, one fresh folder per run (tmpfs when there is room)
    inputs: Path  # per set: <set>.items.json and <set>.curl
    logs: Path


@dataclass
class Run:
    """One run of one contender on one set."""

    measurement: Measurement
    files: int
    n_bytes: int
    problem: str | None = None  # why the run does not count (missing files, exit code, ...)

    @property
    def inproc_s(self) -> float | None:
        seconds = self.measurement.report.get("seconds")
        return float(seconds) if seconds is not None else None


@dataclass
class Row:
    """The median of a contender's runs on one set."""

    data: str
    contender: str
    runs: list[Run] = field(default_factory=list)

    @property
    def good(self) -> list[Run]:
        return [r for r in self.runs if r.problem is None]

    def median(self, what: str) -> float | None:
        values: list[float] = []
        for run in self.good:
            m = run.measurement
            value = {
                "wall": m.wall_s,
                "cpu": m.cpu_s,
                "rss": m.rss_mib,
                "files": float(run.files),
                "bytes": float(run.n_bytes),
                "inproc": run.inproc_s,
            }[what]
            if value is not None:
                values.append(value)
        return statistics.median(values) if values else None

    def rate(self, what: str, inproc: bool = False) -> float | None:
        """Files/s or MiB/s from the median wall (or in-process) seconds."""
        seconds = self.median("inproc" if inproc else "wall")
        amount = self.median("files" if what == "files" else "bytes")
        if not seconds or amount is None:
            return None
        return amount / seconds if what == "files" else amount / (1 << 20) / seconds


def command(setup: Setup, name: str, data: DataSet, out: Path) -> tuple[list[str], Path]:
    """The command line of contender ``name`` on ``data``, and the folder it runs in."""
    c = str(setup.concurrency)
    items = str(setup.inputs / f"{data.name}.items.json")
    if name == "curl":
        config = str(setup.inputs / f"{data.name}.curl")
        return [
            setup.curl,
            *("--parallel", "--parallel-max", c, "--fail", "--silent", "--show-error"),
            *("--create-dirs", "--config", config),
        ], out
    if name == "stac-asset":
        cmd = [setup.stac_asset, "download", "--quiet", "--max-concurrent-downloads", c, items]
        return [*cmd, str(out)], out
    worker = [setup.python, "-m", "bench.worker", name, items, str(out), "--concurrency", c]
    if name == "dagster":
        return [*worker, "--days", str(data.month_days)], setup.repo
    return [*worker, "--collection", f"bench-{data.name}"], setup.repo


def run(setup: Setup, name: str, data: DataSet, tag: str) -> Run:
    """Run ``name`` on ``data`` once, in a fresh output folder removed afterwards."""
    out = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=setup.work))
    try:
        cmd, cwd = command(setup, name, data, out)
        m = run_measured(cmd, cwd=cwd, log_path=setup.logs / f"{data.name}-{name}-{tag}.log")
        return _outcome(name, data, out, m)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _outcome(name: str, data: DataSet, out: Path, m: Measurement) -> Run:
    """What the run produced: files and bytes that are there, complete (or reported staged)."""
    if name in ("stager", "dagster"):
        report = m.report
        files, n_bytes = int(report.get("files", 0)), int(report.get("bytes", 0))
        problem = None
        if not m.ok or not report:
            problem = f"exit code {m.exit_code}: {_tail(m.output)}"
        elif report.get("failed"):
            problem = f"{report['failed']} failed: {'; '.join(report.get('errors', []))}"
        elif name == "stager" and files != len(data.files):
            problem = f"{files} of {len(data.files)} files staged"
        elif name == "dagster" and not report.get("success"):
            problem = "the Dagster run failed"
        return Run(m, files, n_bytes, problem)
    files = n_bytes = 0
    for entry in data.files:
        path = out / entry.item_id / entry.path.rsplit("/", 1)[1]
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if size == entry.size:
            files += 1
            n_bytes += size
    problem = None
    if not m.ok:
        problem = f"exit code {m.exit_code}: {_tail(m.output)}"
    elif files != len(data.files):
        problem = f"{files} of {len(data.files)} files complete"
    return Run(m, files, n_bytes, problem)


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-3:])[-400:]
