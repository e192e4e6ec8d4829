"""The ``brainbench`` command line: world, prepare, bench, describe, list.

``bench`` is parsed by :func:`brainbench.config.parse_bench_args` (jsonargparse: request options, the method
config, ``--section.key=value`` overrides, ``--print-config``); the other commands use argparse, with the
``prepare`` options built from each adapter's signature.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from brainbench import __version__
from brainbench.errors import BrainbenchError, RunInterrupted
from brainbench.progress import show_progress
from brainbench.world.train_clip_options import add_train_clip_options

EXAMPLES = """examples:
  brainbench bench --method litemind --subject 1          # embedded world, generated on first use
  brainbench bench --method ridge --subject 1 --seed 1
  brainbench bench --method litemind --trainer.max_epochs=5 --model.init_args.lr=1e-3 --print-config
  brainbench bench --method litemind --dataset nsd --data-root /data/nsd --backbone ViT-L-14:openai
  brainbench bench --method litemind --dataset world-god --subject 1   # zero-shot on held-out categories
  brainbench prepare nsd --root /data/nsd --subject 1 --out /data/prepared/nsd/subj01
  brainbench prepare god --root /data/god --subject 1 --out /data/prepared/god/subj01 --image-size 224
  brainbench prepare cc2017 --root /data/cc2017 --subject 1 --out /data/prepared/cc2017/subj01
  brainbench prepare mindeye --root /data/mindeyev2 --subject 1 --out /data/prepared/me2/subj01
  brainbench world generate --preset small --subjects 1 2 5 7
  brainbench describe litemind --scale nsd
  brainbench list
"""


def _add_world(sub: argparse._SubParsersAction) -> None:
    world = sub.add_parser("world", help="the embedded world: generate it, train its CLIP, show its card")
    wsub = world.add_subparsers(dest="world_command", required=True)
    gen = wsub.add_parser(
        "generate", help="write a world in a real raw layout: NSD, GOD or CC2017 (resumable)"
    )
    gen.add_argument(
        "--dataset",
        default="world-nsd",
        choices=["world-nsd", "world-god", "world-cc2017"],
        help="which layout",
    )
    gen.add_argument("--preset", default="small", help="world size: small (default) or tiny")
    gen.add_argument("--subjects", type=int, nargs="+", default=[1], help="subjects to simulate (1-8)")
    gen.add_argument(
        "--root",
        type=Path,
        default=None,
        help="output folder (default: $BRAINBENCH_HOME/worlds/<dataset>-<version>)",
    )
    train = wsub.add_parser("train-clip", help="train the world CLIP (run once; ~1 h on 2 cores)")
    train.add_argument("--out", type=Path, required=True, help="output open_clip local-dir folder")
    train.add_argument("--steps", type=int, default=700, help="optimiser steps")
    train.add_argument("--batch-size", type=int, default=256, help="scenes per step")
    train.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    add_train_clip_options(train)
    dec = wsub.add_parser(
        "train-decoder", help="train a world decoder variant (world-CLIP features -> 64 px images; run once)"
    )
    dec.add_argument(
        "--inputs",
        required=True,
        choices=["image", "image+text", "image+detail", "tokens"],
        help="world-CLIP features the decoder reads",
    )
    dec.add_argument(
        "--out", type=Path, required=True, help="output folder (decoder.safetensors + card.json)"
    )
    dec.add_argument("--steps", type=int, default=600, help="optimiser steps")
    dec.add_argument("--batch-size", type=int, default=64, help="scenes per step")
    dec.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate")
    dec.add_argument(
        "--scenes", type=int, default=12000, help="training scenes, rendered and featurised once"
    )
    video = wsub.add_parser(
        "train-video",
        help="train the world frame autoencoder and video generator (run once; see train-video -- --help)",
    )
    video.add_argument("options", nargs=argparse.REMAINDER, help="brainbench.world.train_video options")
    wsub.add_parser("info", help="print the shipped world CLIP's card (sha256, held-out accuracy)")
    cal = wsub.add_parser(
        "calibrate", help="reliability, noise ceilings and oracle retrieval of a world subject"
    )
    cal.add_argument("--preset", default="small", help="world size: small (default) or tiny")
    cal.add_argument("--subject", type=int, default=1, help="subject to calibrate (1-8)")


#: adapter arguments the command sets itself
_ADAPTER_SET = ("dataset_version", "progress")


def _add_adapter_options(parser: argparse.ArgumentParser, adapter: Callable[..., object]) -> None:
    """Options from the adapter's signature and ``Args:`` docstring (``dataset`` is ``--dataset-name``)."""
    from brainbench.config import docstring_help

    hints = typing.get_type_hints(adapter)
    helps = docstring_help(adapter)
    for name, param in inspect.signature(adapter).parameters.items():
        if name in _ADAPTER_SET:
            continue
        flag = "--dataset-name" if name == "dataset" else f"--{name.replace('_', '-')}"
        kinds = [t for t in typing.get_args(hints[name]) if t is not type(None)] or [hints[name]]
        text = helps.get(name, name.replace("_", " ")).replace("%", "%%")
        if kinds[0] is bool:
            parser.add_argument(flag, dest=name, action="store_true", help=text)
        elif param.default is param.empty:
            parser.add_argument(flag, dest=name, type=kinds[0], required=True, help=text)
        else:
            text += f" (default: {param.default})"
            parser.add_argument(flag, dest=name, type=kinds[0], default=param.default, help=text)


def _add_prepare(sub: argparse._SubParsersAction, with_options: bool) -> None:
    """``prepare <adapter>``; the adapters' options are built (importing them) only for a prepare command."""
    from brainbench.data.sources import ADAPTER_SUMMARIES, ADAPTERS

    prep = sub.add_parser("prepare", help="raw dataset layout -> webdataset shards + manifest")
    psub = prep.add_subparsers(dest="adapter", required=True)
    for name in ADAPTERS:
        adapter = psub.add_parser(name, help=ADAPTER_SUMMARIES.get(name, ""))
        if with_options:
            _add_adapter_options(adapter, ADAPTERS.load(name))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of the ``brainbench`` command (``bench`` is a stub, see :func:`main`).

    Args:
        argv: the arguments to parse; the adapters' options are built only when they start with ``prepare``.
    """
    parser = argparse.ArgumentParser(
        prog="brainbench",
        description="Train and compare fMRI-to-vision decoders on the same data.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"brainbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_world(sub)
    _add_prepare(sub, with_options=bool(argv) and argv[0] == "prepare")
    sub.add_parser(
        "bench",
        help="train + evaluate one method on one subject, append a leaderboard row (options: bench --help)",
        add_help=False,
    )
    desc = sub.add_parser("describe", help="build a method at a scale and print its size")
    desc.add_argument("method", help="method id (see `brainbench list`)")
    desc.add_argument("--scale", default="nsd", help="config name: nsd (real scale) or world")
    sub.add_parser(
        "list", help="every registry: methods and their configs, datasets, adapters, generators, ..."
    )
    board = sub.add_parser("leaderboard", help="leaderboard CSVs: file a finished run's row")
    board_sub = board.add_subparsers(dest="leaderboard_command", required=True)
    append = board_sub.add_parser(
        "append", help="append the row of a finished run (runs/<id>/result.json) whose append failed"
    )
    append.add_argument("run_dir", type=Path, help="the run folder, e.g. runs/20260101T120000Z-1a2b3c4d")
    return parser


def _prepare(args: argparse.Namespace) -> typing.Any:  # noqa: ANN401
    from brainbench.data.sources import ADAPTERS

    adapter = ADAPTERS.load(args.adapter)
    names = inspect.signature(adapter).parameters
    return adapter(**{name: value for name, value in vars(args).items() if name in names})


def _ids(target: str) -> list[str]:
    """The ids of a registry given as ``module:attribute``: a Registry or mapping (its keys) or a function."""
    from brainbench.registry import import_target

    found = import_target(target)
    if callable(found) and not isinstance(found, Mapping):
        found = found()
    return [str(k) for k in found]


#: what ``brainbench list`` prints besides the methods: label -> candidates, the first importable is used
LISTED = {
    "datasets": ("brainbench.data.registry:DATASETS",),
    "adapters": ("brainbench.data.sources:ADAPTERS",),
    "generators": ("brainbench.generators:GENERATORS",),
    "networks": ("brainbench.backbones:NETWORKS", "brainbench.eval.networks:list_networks"),
    "metric chains": ("brainbench.metrics.preprocess:list_chains",),
    "world presets": ("brainbench.world.config:WORLD_PRESETS",),
}


def _list() -> None:
    from brainbench.errors import ConfigError
    from brainbench.methods import list_methods, list_scales

    for method in list_methods():
        print(f"method {method:<10} configs: {', '.join(list_scales(method))}")
    for label, candidates in LISTED.items():
        for target in candidates:
            try:
                ids = _ids(target)
            except ConfigError:
                continue
            print(f"{label}: {', '.join(ids)}")
            break


def _bench(argv: list[str]) -> None:
    from brainbench.bench import format_summary, run_bench
    from brainbench.config import parse_bench_args

    request, config = parse_bench_args(argv)
    row, result = run_bench(request, config=config)
    if row:  # ranks other than 0 of an externally launched DDP job return an empty row
        print(format_summary(result, row, request.leaderboards))


def _run(args: argparse.Namespace) -> None:
    if args.command == "world":
        from brainbench.backbones import world_clip as clip

        if args.world_command == "generate":
            from brainbench.data.preparation import default_home
            from brainbench.data.registry import generate_world_dataset

            root = generate_world_dataset(args.dataset, args.preset, args.subjects, default_home(), args.root)
            print(f"{args.dataset} ({args.preset}) subjects {args.subjects} ready at {root}")
        elif args.world_command == "train-clip":
            from brainbench.world.train_clip import train_world_clip
            from brainbench.world.train_clip_options import train_clip_kwargs

            card = train_world_clip(args.out, **train_clip_kwargs(args))
            print(json.dumps(card, indent=2))
        elif args.world_command == "train-decoder":
            from brainbench.data.preparation import default_home
            from brainbench.world.train_world_decoder import train_world_decoder

            card = train_world_decoder(
                args.inputs,
                args.out,
                default_home() / "cache" / "world-decoder-data",
                n_scenes=args.scenes,
                steps=args.steps,
                batch_size=args.batch_size,
                lr=args.lr,
            )
            print(json.dumps(card, indent=2))
        elif args.world_command == "train-video":
            from brainbench.world.train_video import main as train_video

            train_video([o for o in args.options if o != "--"])
        elif args.world_command == "calibrate":
            from brainbench.data.preparation import default_home
            from brainbench.request import BenchRequest
            from brainbench.world.build import world_root
            from brainbench.world.calibration import calibration_report

            request = BenchRequest(
                method="ridge", subject=args.subject, world_preset=args.preset, home=default_home()
            )
            prepared = request.prepared_folder()
            report = calibration_report(world_root(default_home(), args.preset), prepared, args.subject)
            print(json.dumps(report, indent=2))
        else:
            print(json.dumps(clip.load_world_clip_card(), indent=2))
    elif args.command == "prepare":
        manifest = _prepare(args)
        print(
            f"prepared {manifest.dataset} subject {manifest.subject}: {manifest.n_voxels} voxels, "
            f"split {manifest.split_name}, "
            + ", ".join(f"{k} {v['n_samples']}" for k, v in manifest.splits.items())
        )
    elif args.command == "describe":
        from brainbench.describe import describe

        info = describe(args.method, args.scale)
        print(
            f"{info['method']} @ {info['scale']}: {info['n_params']:,} parameters "
            f"({info['n_voxels']} voxels -> {info['target_shapes']})"
        )
        print(f"  paper:    {info['paper']}\n  fidelity: {info['fidelity']}")
    elif args.command == "leaderboard":
        from brainbench.bench import append_result

        row = append_result(args.run_dir)
        print(f"appended run {row['run_id']} ({row['method']}, {row['dataset']} {row['subject']})")
    elif args.command == "list":
        _list()


def main(argv: list[str] | None = None) -> int:
    """Entry point; a :class:`BrainbenchError` prints its message (file + fix) instead of a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_progress("--quiet" not in argv)
    try:
        if argv and argv[0] == "bench":
            _bench(argv[1:])
        else:
            _run(build_parser(argv).parse_args(argv))
    except RunInterrupted as error:
        print(f"brainbench: {error}", file=sys.stderr)
        return error.exit_code
    except BrainbenchError as error:
        print(f"brainbench: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
