"""The PmcmFL card's table: every federated method at p in {0, .3, .5, .7}, plus the centralised bound.

    python benchmarks/federated_sweep.py --seeds 0   # the runs; rows to leaderboards/world-nsd/federated.csv
    python benchmarks/federated_sweep.py --table     # the markdown table from that CSV

Each run is `brainbench federate` in Flower's simulation (8 sites, config `world`); the centralised
upper bound (one site, no modality missing) runs once per seed and fills every p column.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from brainbench.errors import BrainbenchError
from brainbench.federated.config import load_federated_config
from brainbench.federated.run import METRIC_IDS, centralised, federate, format_row
from brainbench.leaderboard.store import read_leaderboard

METHODS = ("pmcmfl", "pmcmfl-nocontrast", "fedavg-zero", "fedavg-random", "fedavg-pairs")
MISSING = (0.0, 0.3, 0.5, 0.7)


def sweep(
    seeds: list[int],
    leaderboards: Path,
    sites: int,
    rounds: int | None,
    missing: list[float],
    methods: list[str],
    with_centralised: bool,
) -> None:
    for seed in seeds:
        base = load_federated_config("world", seed=seed, sites=sites, rounds=rounds)
        runs = [centralised(base)] if with_centralised else []
        runs += [base.replace(method=m, missing=p) for p in missing for m in methods]
        for config in runs:
            try:
                row = federate(config, leaderboards=leaderboards)
            except BrainbenchError as error:  # a failed run leaves no row; the others go on
                print(f"FAILED {config.method} p={config.missing} seed={config.seed}: {error}", flush=True)
                continue
            print(format_row(row), flush=True)


def table(csv: Path, sites: int) -> str:
    rows = read_leaderboard(csv)
    rows = rows[rows["engine"].str.endswith(":simulation")]
    lines = []
    for kind, mode in [(k, m) for k in ("top1", "map") for m in ("multimodal", "fmri_only")]:
        metric = METRIC_IDS[f"{kind}_{mode}"]
        title = {"top1": "top-1 category", "map": "mean average precision"}[kind]
        lines += [
            f"\n**{title}, {mode.replace('_', '-')} inference** (mean ± sd over seeds; n = seeds)\n",
            "| method | " + " | ".join(f"p = {p:g}" for p in MISSING) + " |",
            "|---|" + "---:|" * len(MISSING),
        ]
        for method in ("centralised", *METHODS):
            cells = []
            for p in MISSING:
                if method == "centralised":
                    pick = rows[(rows["method"] == method) & (rows["sites"].astype(int) == 1)]
                else:
                    pick = rows[
                        (rows["method"] == method)
                        & (rows["sites"].astype(int) == sites)
                        & (rows["missing_p"].astype(float) == p)
                    ]
                values = pd.to_numeric(pick[metric]).dropna()
                sd = f" ± {values.std():.3f}" if len(values) > 1 else ""
                cells.append(f"{values.mean():.3f}{sd} (n={len(values)})" if len(values) else "–")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--sites", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--missing", type=float, nargs="*", default=list(MISSING))
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--no-centralised", action="store_true", help="skip the centralised run")
    parser.add_argument("--leaderboards", type=Path, default=Path("leaderboards"))
    parser.add_argument("--table", action="store_true", help="print the card's table from the CSV and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.leaderboards / "world-nsd" / "federated.csv", args.sites))
        return 0
    sweep(
        args.seeds,
        args.leaderboards,
        args.sites,
        args.rounds,
        args.missing,
        args.methods,
        not args.no_centralised,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
