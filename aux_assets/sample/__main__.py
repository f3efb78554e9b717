"""CLI: ``python -m aux_assets.sample OUT [--start] [--end] [--seed] [--max-size] [--types]``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from aux_assets.sample import (
    DEFAULT_END,
    DEFAULT_MAX_SIZE,
    DEFAULT_START,
    MIN_MAX_SIZE,
    PRODUCT_TYPES,
    generate_sample,
)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _types(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in PRODUCT_TYPES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown product type(s) {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(PRODUCT_TYPES)}"
        )
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """Generate a sample and print a one-line summary."""
    parser = argparse.ArgumentParser(
        prog="python -m aux_assets.sample",
        description="Write a deterministic AUXIP-like static STAC collection of Sentinel aux data.",
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder (absent or empty)")
    parser.add_argument(
        "--start", type=_day, default=DEFAULT_START, help="first day served (default %(default)s)"
    )
    parser.add_argument(
        "--end",
        type=_day,
        default=DEFAULT_END,
        help="day after the last served (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument(
        "--max-size",
        type=int,
        default=DEFAULT_MAX_SIZE,
        metavar="BYTES",
        help=f"clip files to BYTES (default {DEFAULT_MAX_SIZE}; 0 for real sizes)",
    )
    parser.add_argument(
        "--types", type=_types, metavar="T1,T2", help="product types to write (default: all 27)"
    )
    args = parser.parse_args(argv)
    if args.end <= args.start:
        parser.error(f"--end {args.end} must be after --start {args.start}")
    if args.max_size < 0 or 0 < args.max_size < MIN_MAX_SIZE:
        parser.error(f"--max-size must be 0 (real sizes) or at least {MIN_MAX_SIZE} bytes")
    began = time.perf_counter()
    try:
        summary = generate_sample(
            args.out,
            args.start,
            args.end,
            seed=args.seed,
            max_size=args.max_size or None,
            product_types=args.types,
        )
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    print(
        f"wrote {summary.n_items} items, {summary.n_bytes} bytes, "
        f"{len(summary.product_types)} product types for {args.start} to {args.end} "
        f"into {summary.collection_href} in {time.perf_counter() - began:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
