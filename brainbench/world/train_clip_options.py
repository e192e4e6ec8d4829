"""Command-line options of ``brainbench world train-clip`` beyond v1's (kept free of heavy imports)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any


def add_train_clip_options(parser: argparse.ArgumentParser) -> None:
    """Objective, MLIP part switches, data and budget options (see :func:`train_world_clip`)."""
    parser.add_argument(
        "--objective", choices=["clip", "mlip"], default="clip", help="CLIP or MLIP pre-training"
    )
    parser.add_argument("--no-frequency", action="store_true", help="MLIP without its frequency stage")
    parser.add_argument("--no-token-align", action="store_true", help="MLIP without token-level alignment")
    parser.add_argument(
        "--merge-rate",
        type=float,
        default=0.0,
        help="MLIP token merging: share of tokens merged per merging block",
    )
    parser.add_argument(
        "--merge-layers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="blocks (1-based) after which tokens merge",
    )
    parser.add_argument(
        "--merge-alpha", type=float, default=0.5, help="spatial vs frequency weight of token importance"
    )
    parser.add_argument(
        "--lambda-frequency", type=float, default=0.5, help="weight of the frequency-global CLIP loss"
    )
    parser.add_argument("--lambda-token", type=float, default=0.5, help="weight of each token-level loss")
    parser.add_argument(
        "--token-batch", type=int, default=64, help="pairs per step entering the token-level losses"
    )
    parser.add_argument("--init", type=Path, default=None, help="start from a trained world CLIP folder")
    parser.add_argument(
        "--pool-pairs", type=int, default=0, help="fixed cached pair pool size (0: fresh scenes)"
    )
    parser.add_argument("--group-size", type=int, default=1, help="category-contrast group size of the pool")
    parser.add_argument("--data-fraction", type=float, default=1.0, help="share of the pool used")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock training budget")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch seed")
    parser.add_argument("--eval-pairs", type=int, default=500, help="held-out retrieval pairs")
    parser.add_argument("--eval-zero-shot", type=int, default=1000, help="held-out zero-shot scenes")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="fp32, or bf16 autocast (open_clip's amp_bf16; 1.3x faster on a CPU with AVX512-BF16)",
    )


_FLAGS = (
    "steps",
    "batch_size",
    "lr",
    "objective",
    "merge_rate",
    "merge_layers",
    "merge_alpha",
    "lambda_frequency",
    "lambda_token",
    "token_batch",
    "init",
    "pool_pairs",
    "group_size",
    "data_fraction",
    "minutes",
    "warmup",
    "seed",
    "eval_pairs",
    "eval_zero_shot",
    "precision",
)


def train_clip_command(args: argparse.Namespace) -> str:
    """The full command line of a parsed ``train-clip`` call, every option explicit (for the card)."""
    parts = ["brainbench", "world", "train-clip", "--out", str(args.out)]
    for name in _FLAGS:
        value = getattr(args, name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    parts += [f"--{n}" for n in ("no-frequency", "no-token-align") if getattr(args, n.replace("-", "_"))]
    return shlex.join(parts)


def train_clip_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`brainbench.world.train_clip.train_world_clip` from parsed options."""
    import torch

    from brainbench.backbones.mlip import MLIPConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    mlip = MLIPConfig(
        frequency=not args.no_frequency,
        token_align=not args.no_token_align,
        merge_rate=args.merge_rate,
        merge_layers=tuple(args.merge_layers),
        merge_alpha=args.merge_alpha,
        lambda_frequency=args.lambda_frequency,
        lambda_token=args.lambda_token,
        token_batch=args.token_batch,
    )
    return dict(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        seed=args.seed,
        objective=args.objective,
        mlip=mlip,
        init=args.init,
        pool_pairs=args.pool_pairs,
        group_size=args.group_size,
        data_fraction=args.data_fraction,
        minutes=args.minutes,
        eval_pairs=args.eval_pairs,
        eval_zero_shot=args.eval_zero_shot,
        precision=args.precision,
        command=train_clip_command(args),
    )
