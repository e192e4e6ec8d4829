"""The ``brainbench`` command line: world, prepare, bench, describe, list, leaderboard, push-model, ...

``bench`` is parsed by :func:`brainbench.config.parse_bench_args` (jsonargparse: request options, the method
config, ``--section.key=value`` overrides, ``--print-config``); the other commands use argparse, with the
``prepare`` options built from each adapter's signature.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
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
  brainbench bench --method willsaligner --subject 1 --train-sessions 1   # few-shot: one session of subject 1
  brainbench prepare nsd --root /data/nsd --subject 1 --out /data/prepared/nsd/subj01
  brainbench prepare god --root /data/god --subject 1 --out /data/prepared/god/subj01 --image-size 224
  brainbench prepare cc2017 --root /data/cc2017 --subject 1 --out /data/prepared/cc2017/subj01
  brainbench prepare mindeye --root /data/mindeyev2 --subject 1 --out /data/prepared/me2/subj01
  brainbench world generate --preset small --subjects 1 2 5 7
  brainbench federate --method pmcmfl --dataset world-nsd --sites 8 --missing 0.5 --rounds 10
  brainbench describe litemind --scale nsd
  brainbench list
  brainbench leaderboard merge other-machine/retrieval.csv --into leaderboards/world-nsd/retrieval.csv
  brainbench leaderboard render && brainbench leaderboard report
  BRAINBENCH_OFFLINE=0 brainbench leaderboard push --repo user/brainbench-results
  BRAINBENCH_OFFLINE=0 brainbench push-model runs/<id>/model --repo user/litemind-subj01

errors print one line (the file or key, the problem, the fix) and exit 2; add --debug for the traceback.
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
    _add_federate(sub)
    _add_evaluate(sub)
    predict = sub.add_parser(
        "predict",
        help="predict with a saved model (runs/<id>/model) on a prepared split or a .npy of voxels",
    )
    predict.add_argument("--model", type=Path, required=True, help="a saved model folder: runs/<id>/model")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--prepared", type=Path, help="prepared folder; predicts its --split (test)")
    source.add_argument("--voxels", type=Path, help=".npy of (N, V) voxels preprocessed as in training")
    predict.add_argument("--split", default="test", help="split of --prepared (test: repeat averages)")
    predict.add_argument(
        "--generate",
        metavar="saved|KIND",
        help="also generate images: `saved` (the generator the model was scored with) or a generator kind; "
        "needs --prepared; writes <out>_images/<stim_id>.png",
    )
    predict.add_argument(
        "--out", type=Path, default=Path("predictions.safetensors"), help="output .safetensors file"
    )
    desc = sub.add_parser("describe", help="build a method at a scale and print its size")
    desc.add_argument("method", help="method id (see `brainbench list`)")
    desc.add_argument("--scale", default="nsd", help="config name: nsd (real scale) or world")
    sub.add_parser(
        "list", help="every registry: methods and their configs, datasets, adapters, generators, ..."
    )
    board = sub.add_parser(
        "leaderboard", help="leaderboard CSVs: file a run's row, merge, render, report, push to the Hub"
    )
    board_sub = board.add_subparsers(dest="leaderboard_command", required=True)
    append = board_sub.add_parser(
        "append", help="append the row of a finished run (runs/<id>/result.json) whose append failed"
    )
    append.add_argument("run_dir", type=Path, help="the run folder, e.g. runs/20260101T120000Z-1a2b3c4d")
    merge = board_sub.add_parser(
        "merge", help="union CSVs written on other machines into one, by run id (conflicting rows refused)"
    )
    merge.add_argument("sources", type=Path, nargs="+", help="leaderboard CSVs to merge in")
    merge.add_argument("--into", type=Path, required=True, help="the destination CSV (created if absent)")
    render = board_sub.add_parser("render", help="leaderboards/README.md from the CSVs (as make leaderboard)")
    render.add_argument(
        "--leaderboards", type=Path, default=Path("leaderboards"), help="default: leaderboards"
    )
    render.add_argument("--out", type=Path, default=None, help="default: <leaderboards>/README.md")
    report = board_sub.add_parser("report", help="the static HTML report: tables, plots, galleries")
    report.add_argument(
        "--leaderboards", type=Path, default=Path("leaderboards"), help="default: leaderboards"
    )
    report.add_argument("--runs", type=Path, default=Path("runs"), help="run folders for galleries (runs)")
    report.add_argument("--out", type=Path, default=Path("leaderboards/report"), help="leaderboards/report")
    push = board_sub.add_parser(
        "push",
        help="upload leaderboards/**/*.csv + Parquet copies to a HF dataset (needs BRAINBENCH_OFFLINE=0)",
    )
    push.add_argument("--leaderboards", type=Path, default=Path("leaderboards"), help="default: leaderboards")
    _add_hub_options(push, "dataset")
    model = sub.add_parser(
        "push-model", help="upload a run's model folder to a HF model repo (needs BRAINBENCH_OFFLINE=0)"
    )
    model.add_argument("model_dir", type=Path, help="the run's model folder, e.g. runs/<id>/model")
    _add_hub_options(model, "model")
    return parser


def _add_hub_options(parser: argparse.ArgumentParser, repo_type: str) -> None:
    parser.add_argument("--repo", required=True, help=f"the Hugging Face {repo_type} repo id, e.g. user/name")
    parser.add_argument("--token", default=None, help="a write token (default: HF_TOKEN or `hf auth login`)")
    parser.add_argument("--endpoint", default=None, help="hub URL (default: $HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--private", action="store_true", help="create the repo private if it is new")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="score predictions made elsewhere (embeddings, reconstructions) as bench scores its own",
        description="Score external predictions on a prepared folder's test split with bench's evaluator and "
        "metric specs, and append a row marked source=external.",
    )
    evaluate.add_argument(
        "--prepared", type=Path, required=True, help="prepared folder (brainbench prepare, or the contract)"
    )
    evaluate.add_argument(
        "--predictions",
        type=Path,
        required=True,
        help="a .safetensors (keyed by target, optional stim_id) or <target>.npy file, or a folder of them "
        "and/or reconstructions named <stim_id>.png",
    )
    evaluate.add_argument("--method", required=True, help="your method's name (the row's method)")
    evaluate.add_argument("--label", default="", help="the row's method_version: a paper, a commit, ...")
    evaluate.add_argument(
        "--backbone", default="world-clip:v1", help="embedding space of the predictions (world-clip:v1)"
    )
    evaluate.add_argument(
        "--leaderboards", type=Path, default=Path("leaderboards"), help="leaderboard folder (leaderboards)"
    )


def _add_federate(sub: typing.Any) -> None:  # noqa: ANN401
    fed = sub.add_parser(
        "federate",
        help="federated decoding on Flower (PmcmFL or a baseline), one SuperNode per site",
    )
    fed.add_argument(
        "--method",
        default=None,
        help="pmcmfl, pmcmfl-nocontrast, fedavg-zero, fedavg-random, fedavg-pairs or centralised",
    )
    fed.add_argument("--dataset", default=None, help="prepared dataset id (world-nsd)")
    fed.add_argument("--subjects", default=None, help="'+'-joined subjects the sites hold, e.g. 1+2+5+7")
    fed.add_argument("--sites", type=int, default=None, help="number of sites (SuperNodes)")
    fed.add_argument("--missing", type=float, default=None, help="drop probability of each modality")
    fed.add_argument("--rounds", type=int, default=None, help="federated rounds")
    fed.add_argument(
        "--dirichlet-alpha", type=float, default=None, help="label skew across a subject's sites"
    )
    fed.add_argument("--seed", type=int, default=None)
    fed.add_argument("--config", default="world", help="config name under configs/pmcmfl/ or a YAML path")
    fed.add_argument(
        "--engine",
        choices=("simulation", "loopback"),
        default="simulation",
        help="in-process simulation, or a SuperLink + one SuperNode per site on 127.0.0.1",
    )
    fed.add_argument("--leaderboards", type=Path, default=Path("leaderboards"))
    fed.add_argument("--runs", type=Path, default=Path("runs"))


def _federate(args: argparse.Namespace) -> None:
    from brainbench.federated.config import load_federated_config
    from brainbench.federated.run import centralised, federate, format_row

    config = load_federated_config(
        args.config,
        method=args.method,
        dataset=args.dataset,
        subjects=args.subjects,
        sites=args.sites,
        missing=args.missing,
        rounds=args.rounds,
        dirichlet_alpha=args.dirichlet_alpha,
        seed=args.seed,
    )
    if config.method == "centralised":  # the upper bound: one site holding every subject, nothing missing
        config = centralised(config)
    row = federate(config, mode=args.engine, leaderboards=args.leaderboards, runs=args.runs)
    print(format_row(row))


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
    from brainbench.bench import format_summary, leaderboard_csv, run_bench
    from brainbench.config import parse_bench_args
    from brainbench.data.manifest import Manifest

    request, config = parse_bench_args(argv)
    row, result = run_bench(request, config=config)
    if row:  # ranks other than 0 of an externally launched DDP job return an empty row
        csv_path = leaderboard_csv(request.leaderboards, Manifest.load(request.prepared_folder()))
        print(format_summary(result, row, csv_path))


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
        _leaderboard(args)
    elif args.command == "push-model":
        from brainbench.leaderboard.publish import push_model

        url, files = push_model(
            args.model_dir, args.repo, token=args.token, endpoint=args.endpoint, private=args.private
        )
        print(f"pushed {len(files)} files of {args.model_dir} to model repo {args.repo}: {url}")
    elif args.command == "federate":
        _federate(args)
    elif args.command == "list":
        _list()
    elif args.command == "predict":
        from brainbench.predict import predict

        predictions = predict(
            args.model,
            args.out,
            prepared=args.prepared,
            voxels=args.voxels,
            split=args.split,
            generate=args.generate,
        )
        shapes = {name: tuple(value.shape) for name, value in predictions.items()}
        print(f"wrote {args.out}: {shapes}")
    elif args.command == "evaluate":
        from brainbench.bench import format_summary, leaderboard_csv
        from brainbench.data.manifest import Manifest
        from brainbench.submission import evaluate_predictions

        row, result = evaluate_predictions(
            args.prepared,
            args.predictions,
            method=args.method,
            backbone=args.backbone,
            leaderboards=args.leaderboards,
            label=args.label,
        )
        print(format_summary(result, row, leaderboard_csv(args.leaderboards, Manifest.load(args.prepared))))


def _leaderboard(args: argparse.Namespace) -> None:
    if args.leaderboard_command == "append":
        from brainbench.bench import append_result

        row = append_result(args.run_dir)
        print(f"appended run {row['run_id']} ({row['method']}, {row['dataset']} {row['subject']})")
    elif args.leaderboard_command == "merge":
        from brainbench.leaderboard.store import merge_rows

        result = merge_rows(args.into, args.sources)
        print(
            f"merged {len(result.added)} new rows into {args.into} "
            f"({result.already_there} identical rows were already there)"
        )
    elif args.leaderboard_command == "render":
        from brainbench.leaderboard.render import write_readme

        print(write_readme(args.leaderboards, args.out))
    elif args.leaderboard_command == "report":
        from brainbench.leaderboard.report import build_report

        print(build_report(args.leaderboards, args.runs, args.out))
    elif args.leaderboard_command == "push":
        from brainbench.leaderboard.publish import push_leaderboards

        url, files = push_leaderboards(
            args.leaderboards, args.repo, token=args.token, endpoint=args.endpoint, private=args.private
        )
        print(f"pushed {len(files)} files (CSV + Parquet) to dataset repo {args.repo}: {url}")


def one_line(error: BaseException) -> str:
    """An error's message on one line: ``<file>: <problem>; fix: <fix>``."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Entry point; a :class:`BrainbenchError` prints one line (file, problem, fix) and exits 2.

    ``--debug`` anywhere on the command line (or ``BRAINBENCH_DEBUG=1``) shows the traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("BRAINBENCH_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    show_progress("--quiet" not in argv)
    try:
        if argv and argv[0] == "bench":
            _bench(argv[1:])
        else:
            _run(build_parser(argv).parse_args(argv))
    except RunInterrupted as error:
        print(f"brainbench: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except BrainbenchError as error:
        if debug:
            raise
        print(f"brainbench: error: {one_line(error)} (--debug shows the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
