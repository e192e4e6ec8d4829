"""``make bench`` wall time per method on the embedded world, and the headline metric of each run.

Runs :func:`brainbench.bench.run_bench` (what ``make bench METHOD=<m> SUBJECT=1`` runs) for every method's
world config, one after another in this process, and records the wall time of the whole call (world and
shards are reused when ``--home`` already holds them, so the first run of a fresh home also pays for
generating the world), the training time the leaderboard row records, and the run's first headline metric.

Rows go to ``--leaderboards`` (default: a scratch folder, so timing runs never land on the published
leaderboards; pass ``--leaderboards leaderboards`` to publish them).

Usage::

    python benchmarks/bench_wall_time.py --csv benchmarks/results/bench_wall_time.csv
    python benchmarks/bench_wall_time.py --methods litemind ridge --home /scratch/brainbench
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
import warnings
from pathlib import Path

from brainbench.bench import BenchRequest, run_bench
from brainbench.data.preparation import default_home
from brainbench.methods import list_methods, list_scales

HEADLINE = ("zeroshot_top1_", "nway_video_top1_50way", "retrieval_b2i_top1_subset300")  # column prefixes


def headline(row: dict) -> tuple[str, object]:
    """The run's first non-empty headline column (zero-shot, video 50-way, or 300-way brain->image)."""
    for prefix in HEADLINE:
        for column, value in row.items():
            if column.startswith(prefix) and value not in (None, ""):
                return column, value
    return "", ""


def main() -> None:
    """Runs every requested method and prints (and optionally saves) the table."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument(
        "--methods", nargs="+", default=None, help="default: every method with a world config"
    )
    parser.add_argument("--subject", type=int, default=1)
    parser.add_argument("--home", type=Path, default=default_home(), help="default: %(default)s")
    parser.add_argument("--leaderboards", type=Path, default=None, help="default: a scratch folder")
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--csv", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    methods = args.methods or [m for m in list_methods() if "world" in list_scales(m)]
    leaderboards = args.leaderboards or Path(tempfile.mkdtemp(prefix="bench_wall_time_"))
    rows = []
    for method in methods:
        request = BenchRequest(
            method=method,
            subject=args.subject,
            home=args.home,
            leaderboards=leaderboards,
            runs=args.runs,
            progress=False,
        )
        start = time.perf_counter()
        row, _ = run_bench(request)
        wall = time.perf_counter() - start
        metric, value = headline(row)
        rows.append(
            {
                "method": method,
                "dataset": row["dataset"],
                "wall_seconds": round(wall, 1),
                "train_seconds": row["train_seconds"],
                "n_params": row["n_params"],
                "headline_metric": metric,
                "value": value,
                "run_id": row["run_id"],
            }
        )
        print(" | ".join(str(v) for v in rows[-1].values()), flush=True)
    if args.csv and rows:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
