"""``python -m bench``: data, nginx, the contenders in alternation, the table and the targets."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench import contenders, data, extras
from bench.contenders import Row, Setup
from bench.nginx import Nginx, find_nginx

REPO = Path(__file__).resolve().parents[1]
STAC_ASSET_VENV = Path(
    os.environ.get("AUX_BENCH_STAC_ASSET_VENV")
    or Path.home() / ".cache" / "aux_assets" / "bench-venv-stac-asset"
)
MONTH_MAX_SIZE = 256 * 1024
TARGET_TINY_FILES_S = 1500.0
TARGET_LARGE_X_CURL = 0.8
TARGET_PEAK_MIB = 200.0
TARGET_PGSTAC_ITEMS_S = 1000.0
TARGET_SEARCH_X_FLOOR = 3.0  # issue 12: search + select <= 3x parsing the documents once
TARGET_STATIC_RSS_MIB = 200.0  # issue 12: a 50,000-item static source, peak RSS
TARGET_STAC_X_RAW = 1.2  # issue 12: search + select in pgstac <= 1.2x raw pystac-client paging
TARGET_BACKFILL_S = 1.0  # issue 12: a 365-day backfill through webserver + daemon, per partition


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Loopback benchmark of aux_assets against curl and stac-asset.",
    )
    p.add_argument("--repeats", type=int, help="runs per contender and set (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, a 3-day month")
    p.add_argument("--concurrency", type=int, default=8, help="for every contender (default 8)")
    p.add_argument("--sets", default="tiny,small,large,month", help="comma-separated")
    p.add_argument("--contenders", default=",".join(contenders.ALL), help="comma-separated")
    p.add_argument("--month-days", type=int, help="days of the month set (default 30)")
    p.add_argument("--month-max-size", type=int, default=MONTH_MAX_SIZE, metavar="BYTES")
    p.add_argument("--pgstac-items", type=int, help="items registered in pgstac (default 5000)")
    p.add_argument("--no-pgstac", action="store_true", help="skip the pgstac line")
    p.add_argument("--backfill-days", type=int, help="days of the backfill row (default 365)")
    p.add_argument("--no-extras", action="store_true", help="only the table")
    p.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    p.add_argument("--work-dir", type=Path, help="outputs (default /dev/shm when it has room)")
    p.add_argument("--stac-asset-venv", type=Path, default=STAC_ASSET_VENV)
    p.add_argument("--json", type=Path, help="also write every measurement to this file")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.month_days = args.month_days or (3 if args.quick else 30)
    args.pgstac_items = args.pgstac_items or (1000 if args.quick else 5000)
    args.backfill_days = args.backfill_days or (30 if args.quick else 365)
    args.sets = [s for s in args.sets.split(",") if s]
    args.contenders = [c for c in args.contenders.split(",") if c]
    bad = [s for s in args.sets if s not in ("tiny", "small", "large", "month")]
    bad += [c for c in args.contenders if c not in contenders.ALL]
    if bad or args.repeats < 1 or args.concurrency < 1 or args.backfill_days < 1:
        p.error(f"unknown set or contender, or a count below 1: {', '.join(bad) or 'see above'}")
    return args


def _work_root(chosen: Path | None) -> Path:
    if chosen is not None:
        return chosen
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 5 << 30:
        return shm
    return Path(tempfile.gettempdir())


def _first_line(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "?"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "?"


def machine(setup: Setup, nginx: Nginx) -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    versions = "import importlib.metadata as m; print(m.version('stac-asset'))"
    ours = (
        "import importlib.metadata as m, sys; "
        "print(sys.version.split()[0], *(f'{p} {m.version(p)}' for p in "
        "('aiohttp', 'httpx', 'pystac', 'dagster')))"
    )
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical CPUs",
        "ram": f"{mem_kib / (1 << 20):.1f} GiB",
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": _first_line([setup.python, "-c", ours]),
        "nginx": nginx.version(),
        "curl": _first_line([setup.curl, "--version"]).split(" (")[0],
        "stac-asset": _first_line([str(Path(setup.stac_asset).parent / "python"), "-c", versions]),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    """The results as a markdown table (medians; ``x curl`` is MiB/s relative to curl's)."""
    head = (
        "| set | contender | files | MiB | wall s | files/s | MiB/s | CPU s | peak RSS MiB "
        "| x curl | in-process s | runs |"
    )
    lines = [head, "|" + "---|" * 12]
    curl = {r.data: r.rate("mib") for r in rows if r.contender == "curl"}
    for r in rows:
        mib_s, curl_mib_s = r.rate("mib"), curl.get(r.data)
        ratio = mib_s / curl_mib_s if mib_s and curl_mib_s else None
        n_bytes = r.median("bytes")
        runs = f"{len(r.good)}/{len(r.runs)}"
        problems = [run.problem for run in r.runs if run.problem]
        if problems:
            runs += f" ({problems[0][:80]})"
        cells = [
            r.data,
            contenders.LABELS[r.contender],
            _fmt(r.median("files"), ".0f"),
            _fmt(n_bytes / (1 << 20) if n_bytes is not None else None, ",.0f"),
            _fmt(r.median("wall"), ".2f"),
            _fmt(r.rate("files"), ",.0f"),
            _fmt(mib_s, ",.0f"),
            _fmt(r.median("cpu"), ".2f"),
            _fmt(r.median("rss"), ".0f"),
            _fmt(ratio, ".2f"),
            _fmt(r.median("inproc"), ".2f"),
            runs,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "SKIP" if ok is None else ("PASS" if ok else "MISS")


def targets(rows: list[Row], found: dict[str, extras.Extra]) -> list[str]:
    """One PASS/MISS/SKIP line per target of issue 5."""
    by = {(r.data, r.contender): r for r in rows}
    out = []
    # Throughput targets are judged twice: on the whole process (interpreter start-up and
    # imports, about 0.35 s, included) and on the transfer alone (what a running Dagster step
    # or a long staging pays per file).
    tiny = by.get(("tiny", "engine"))
    for label, inproc in (("whole process", False), ("in process", True)):
        rate = tiny.rate("files", inproc=inproc) if tiny else None
        ok = None if rate is None else rate >= TARGET_TINY_FILES_S
        out.append(
            f"{_verdict(ok)}  tiny set >= {TARGET_TINY_FILES_S:,.0f} files/s (engine, {label}): "
            f"{_fmt(rate, ',.0f')} files/s"
        )
    large, curl = by.get(("large", "engine")), by.get(("large", "curl"))
    for label, inproc in (("whole process", False), ("in process", True)):
        ratio = None
        if large and curl and large.rate("mib", inproc=inproc) and curl.rate("mib"):
            ratio = (large.rate("mib", inproc=inproc) or 0) / (curl.rate("mib") or 1)
        ok = None if ratio is None else ratio >= TARGET_LARGE_X_CURL
        out.append(
            f"{_verdict(ok)}  large set >= {TARGET_LARGE_X_CURL} x curl MiB/s with verification "
            f"(engine, {label}): {_fmt(ratio, '.2f')} x curl"
        )
    memory = found.get("memory")
    ok = None if memory is None or memory.value is None else memory.value < TARGET_PEAK_MIB
    value = memory.value if memory else None
    out.append(
        f"{_verdict(ok)}  peak memory < {TARGET_PEAK_MIB:.0f} MiB while staging a 2 GiB file: "
        f"{_fmt(value, '.0f')} MiB"
    )
    again = found.get("rerun")
    ok = None if again is None or again.value is None else bool(again.detail["passed"])
    value = again.value if again else None
    allowed = again.detail.get("allowed_lookups") if again else None
    out.append(
        f"{_verdict(ok)}  re-run of a staged month moves 0 bytes with <= 1 catalog lookup per "
        f"1,000 items (rounded up: {_fmt(allowed, 'd')} allowed): "
        + ("bytes moved" if value == float("inf") else f"{_fmt(value, '.2f')} per 1,000 items")
    )
    at_most = (
        ("search", TARGET_SEARCH_X_FLOOR, ".1f", "x",
         f"search + select of the month on its static catalog <= {TARGET_SEARCH_X_FLOOR:.0f}x "
         "parsing its documents once"),
        ("static", TARGET_STATIC_RSS_MIB, ".0f", " MiB",
         f"search + select on a 50,000-item static source <= {TARGET_STATIC_RSS_MIB:.0f} MiB "
         "peak RSS"),
        ("stac-search", TARGET_STAC_X_RAW, ".2f", "x",
         f"search + select of the month in pgstac <= {TARGET_STAC_X_RAW}x raw pystac-client "
         "paging of the same requests"),
        ("backfill", TARGET_BACKFILL_S, ".2f", " s",
         f"a backfill through the webserver and daemon <= {TARGET_BACKFILL_S:.0f} s per partition"),
    )  # fmt: skip
    for name, target, spec, unit, label in at_most:
        extra = found.get(name)
        value = extra.value if extra else None
        ok = None if value is None else value <= target
        out.append(f"{_verdict(ok)}  {label}: {_fmt(value, spec)}{unit}")
    pg = found.get("pgstac")
    ok = None if pg is None or pg.value is None else pg.value >= TARGET_PGSTAC_ITEMS_S
    out.append(
        f"{_verdict(ok)}  pgstac registration >= {TARGET_PGSTAC_ITEMS_S:,.0f} items/s: "
        f"{_fmt(pg.value if pg else None, ',.0f')} items/s"
    )
    return out


def _tools(args: argparse.Namespace) -> tuple[str, str, str]:
    nginx, curl = find_nginx(), shutil.which("curl")
    stac_asset = args.stac_asset_venv / "bin" / "stac-asset"
    missing = [
        what
        for what, ok in (
            ("nginx", nginx),
            ("curl", curl),
            (f"stac-asset in {args.stac_asset_venv}", stac_asset.is_file()),
        )
        if not ok
    ]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)}; `bash bench/run` installs them")
    assert nginx is not None and curl is not None
    return nginx, curl, str(stac_asset)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 130 when interrupted (Ctrl-C, SIGTERM, SIGHUP), after cleaning up."""
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc or 'Ctrl-C'}): the contender and nginx were stopped")
        return 130


def _main(argv: Sequence[str] | None) -> int:
    args = _parse(argv)
    nginx_bin, curl, stac_asset = _tools(args)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    www = args.data_dir / "www"
    sets: dict[str, data.DataSet] = {}
    for name in args.sets:
        if name == "month":
            sets[name] = data.ensure_month_set(www, args.month_days, args.month_max_size, log)
        else:
            sets[name] = data.ensure_random_set(www, name, log)
    month = sets.get("month")
    if not args.no_extras:
        sets.setdefault("huge", data.ensure_random_set(www, "huge", log))
        if month is None:
            month = data.ensure_month_set(www, args.month_days, args.month_max_size, log)
            sets["month"] = month
    work = Path(tempfile.mkdtemp(prefix="aux-bench-", dir=_work_root(args.work_dir)))
    try:
        with Nginx(www, nginx_bin) as nginx:
            inputs, logs = work / "inputs", work / "logs"
            inputs.mkdir()
            logs.mkdir()
            for ds in sets.values():
                doc = data.item_collection(ds, nginx.url)
                (inputs / f"{ds.name}.items.json").write_text(json.dumps(doc))
                (inputs / f"{ds.name}.curl").write_text(data.curl_config(ds, nginx.url))
            setup = Setup(
                REPO, sys.executable, curl, stac_asset, args.concurrency, work, inputs, logs
            )
            info = machine(setup, nginx)
            return _run(args, setup, sets, month, info)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(
    args: argparse.Namespace,
    setup: Setup,
    sets: dict[str, data.DataSet],
    month: data.DataSet | None,
    info: dict[str, str],
) -> int:
    log(
        f"benchmark: sets {', '.join(args.sets)}; contenders {', '.join(args.contenders)}; "
        f"{args.repeats} repeat(s); concurrency {args.concurrency}; outputs in {setup.work}"
    )
    rows: list[Row] = []
    for name in args.sets:
        ds = sets[name]
        data.warm(ds)
        racing = [c for c in args.contenders if c != "dagster" or ds.is_month]
        set_rows = {c: Row(name, c) for c in racing}
        for r in range(args.repeats):
            for c in racing:  # in alternation: A B C D, A B C D, ...
                run = contenders.run(setup, c, ds, f"r{r + 1}")
                set_rows[c].runs.append(run)
                status = "ok" if run.problem is None else f"PROBLEM: {run.problem}"
                log(
                    f"[{name} {r + 1}/{args.repeats}] {c:<10} {run.measurement.wall_s:7.2f} s "
                    f"wall, {run.measurement.cpu_s:6.2f} s CPU, "
                    f"{run.measurement.rss_mib:5.0f} MiB  {status}"
                )
        rows.extend(set_rows.values())
    found: dict[str, extras.Extra] = {}
    if not args.no_extras:
        log("extras: memory, search, re-run, backfill, pgstac")
        lines = [extras.peak_memory(setup, sets["huge"])]
        if month is not None:
            lines.append(extras.search_select(setup, month))
            lines.append(extras.static_memory(setup, month))
            lines.append(extras.rerun(setup, month))
            if "dagster" in args.contenders:
                lines.append(extras.dagster_rerun(setup, month))
        lines.append(extras.backfill(setup, args.backfill_days, log))
        if args.no_pgstac:
            lines.append(extras.Extra("pgstac", "SKIPPED: --no-pgstac"))
        else:
            lines += extras.pgstac_registration(setup, month, args.pgstac_items, args.repeats, log)
        found = {e.name: e for e in lines}
    info["load"] += " -> " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print("machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()))
    print(
        f"method: nginx (1 worker, sendfile) on 127.0.0.1, outputs in {_work_root(args.work_dir)}, "
        f"concurrency {args.concurrency}, median of {args.repeats}, contenders in alternation; "
        "wall time includes process start-up; peak RSS has a 5 MiB floor (the launcher)"
    )
    month_note = ""
    if month is not None:
        month_note = (
            f"; month = AUXIP sample over {month.month_days} days, {len(month.files)} files "
            f"<= {args.month_max_size // 1024} KiB (MD5 checksums)"
        )
    print(f"sets: tiny 1000 x 64 KiB, small 200 x 1 MiB, large 4 x 256 MiB{month_note}")
    print()
    print(table(rows))
    print()
    for extra in found.values():
        print(extra.text)
    if found:
        print()
    for line in targets(rows, found):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(_dump(rows, found, info), indent=1))
    return 0


def _dump(rows: list[Row], found: dict[str, extras.Extra], info: dict[str, str]) -> Any:
    return {
        "machine": info,
        "rows": [
            {
                "set": r.data,
                "contender": r.contender,
                "runs": [
                    {
                        "wall_s": run.measurement.wall_s,
                        "cpu_s": run.measurement.cpu_s,
                        "rss_mib": run.measurement.rss_mib,
                        "files": run.files,
                        "bytes": run.n_bytes,
                        "inproc_s": run.inproc_s,
                        "problem": run.problem,
                    }
                    for run in r.runs
                ],
            }
            for r in rows
        ],
        "extras": {name: {"text": e.text, "value": e.value} for name, e in found.items()},
    }
