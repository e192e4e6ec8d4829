"""The ``brainbench`` command line: world, prepare, bench, describe, list."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from brainbench.errors import BrainbenchError

EXAMPLES = """examples:
  brainbench bench --method litemind --subject 1          # embedded world, generated on first use
  brainbench bench --method ridge --subject 1 --seed 1
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
    train.add_argument("--steps", type=int, default=700)
    train.add_argument("--batch-size", type=int, default=256)
    train.add_argument("--lr", type=float, default=1e-3)
    dec = wsub.add_parser(
        "train-decoder", help="train a world decoder variant (world-CLIP features -> 64 px images; run once)"
    )
    dec.add_argument("--inputs", required=True, choices=["image", "image+text", "image+detail", "tokens"])
    dec.add_argument(
        "--out", type=Path, required=True, help="output folder (decoder.safetensors + card.json)"
    )
    dec.add_argument("--steps", type=int, default=600)
    dec.add_argument("--batch-size", type=int, default=64)
    dec.add_argument("--lr", type=float, default=2e-3)
    dec.add_argument(
        "--scenes", type=int, default=12000, help="training scenes, rendered and featurised once"
    )
    video = wsub.add_parser(
        "train-video",
        help="train the world frame autoencoder and video generator (run once; see train-video -- --help)",
    )
    video.add_argument("options", nargs=argparse.REMAINDER, help="brainbench.generators.train_video options")
    wsub.add_parser("info", help="print the shipped world CLIP's card (sha256, held-out accuracy)")
    cal = wsub.add_parser(
        "calibrate", help="reliability, noise ceilings and oracle retrieval of a world subject"
    )
    cal.add_argument("--preset", default="small")
    cal.add_argument("--subject", type=int, default=1)


def _add_common_prepare(parser: argparse.ArgumentParser, root_help: str) -> None:
    parser.add_argument("--root", type=Path, required=True, help=root_help)
    parser.add_argument("--subject", type=int, required=True, help="1-based subject number")
    parser.add_argument("--out", type=Path, required=True, help="prepared output folder")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="share of training stimuli held out")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing prepared folder")


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    prep = sub.add_parser("prepare", help="raw dataset layout -> webdataset shards + manifest")
    psub = prep.add_subparsers(dest="dataset", required=True)
    nsd = psub.add_parser("nsd", help="an NSD copy (the bucket layout) or the world's NSD-layout output")
    _add_common_prepare(nsd, "folder holding nsddata/, nsddata_betas/, nsddata_stimuli/")
    nsd.add_argument(
        "--sessions", type=int, default=None, help="use only the first N sessions (37: shared982)"
    )
    nsd.add_argument("--dataset-name", default="nsd", help="dataset id recorded in the manifest")
    god = psub.add_parser("god", help="Generic Object Decoding: bdpy SubjectN.h5 + stimulus tsv files")
    _add_common_prepare(god, "folder holding SubjectN.h5, stimulus_ImageNet*.tsv, ImageNetTest_synset.xlsx")
    god.add_argument("--roi", default="VC", help="ROI flag selecting the voxels (VC, LVC, HVC, V1, ...)")
    god.add_argument("--images", type=Path, default=None, help="image folder (default: ROOT/images)")
    god.add_argument("--image-size", type=int, default=None, help="resize images to this square size")
    god.add_argument("--dataset-name", default="god", help="dataset id recorded in the manifest")
    cc = psub.add_parser("cc2017", help="CC2017 video fMRI (Wen et al. 2018): CIFTI runs + mp4 movies")
    _add_common_prepare(cc, "folder holding video_fmri_dataset/")
    cc.add_argument("--lag-trs", type=int, default=2, help="hemodynamic delay in TRs (2 = 4 s)")
    cc.add_argument("--volumes-per-run", type=int, default=240, help="volumes kept per run (240 = 8 min)")
    cc.add_argument("--fps", type=int, default=3, help="frames sampled per second of movie")
    cc.add_argument("--frame-size", type=int, default=None, help="resize frames to this square size")
    cc.add_argument("--p-value", type=float, default=0.05, help="Bonferroni p of the voxel selection")
    cc.add_argument("--dataset-name", default="cc2017", help="dataset id recorded in the manifest")
    me = psub.add_parser("mindeye", help="MindEye1 webdataset_avg_split or MindEye2 wds/ downloads")
    _add_common_prepare(me, "folder holding webdataset_avg_split/ (MindEye1) or wds/ (MindEye2)")
    me.add_argument("--version", default="auto", choices=["auto", "1", "2"], help="MindEye release")
    me.add_argument("--test-set", default="new_test", help="MindEye2 test tar folder: new_test or test")
    me.add_argument("--image-size", type=int, default=None, help="resize images to this square size")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="train + evaluate one method on one subject, append a leaderboard row",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--method", required=True, help="method id (see `brainbench list`)")
    bench.add_argument("--subject", type=int, default=1)
    bench.add_argument(
        "--dataset",
        default=None,
        help="world-nsd, world-god, world-cc2017; real copies (with --data-root): nsd, god, cc2017 "
        "(default: the config's dataset, else world-nsd)",
    )
    bench.add_argument("--config", default=None, help="config name (world, nsd) or path to a YAML file")
    bench.add_argument("--data-root", type=Path, default=None, help="root of a real dataset copy")
    bench.add_argument("--world-preset", default="small", help="embedded world size (small, tiny)")
    bench.add_argument(
        "--backbone", default=None, help="override the config's backbone, e.g. ViT-L-14:openai"
    )
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument(
        "--val-fraction", type=float, default=None, help="validation share when preparing (default 0.05)"
    )
    bench.add_argument("--home", type=Path, default=None, help="cache folder (default $BRAINBENCH_HOME)")
    bench.add_argument("--leaderboards", type=Path, default=Path("leaderboards"))
    bench.add_argument("--runs", type=Path, default=Path("runs"))
    bench.add_argument("--accelerator", default="auto")
    bench.add_argument("--devices", default="1")
    bench.add_argument(
        "--num-nodes",
        type=int,
        default=1,
        help="nodes of a multi-node DDP job (torchrun or SLURM launches them)",
    )
    bench.add_argument(
        "--strategy", default="auto", help="Lightning strategy; ddp on CPU: gloo ranks forked by Lightning"
    )
    bench.add_argument("--num-workers", type=int, default=0)
    bench.add_argument(
        "--precision",
        default=None,
        help="Lightning precision; default bf16-mixed on capable GPUs, 32-true on CPU",
    )
    bench.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model's forward (for GPUs; slower on CPU, see benchmarks/README.md)",
    )
    bench.add_argument(
        "--generator",
        default=None,
        help="override the config's generator kind: retrieval, world-decoder, world-video, unclip, "
        "versatile-diffusion, sd-img2img, animatediff-sparsectrl",
    )
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.add_argument("--resume", default=None, help="continue an interrupted run: latest or a run id")
    bench.add_argument("--logger", default="csv", help="csv, tensorboard, wandb or mlflow")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``brainbench`` command."""
    parser = argparse.ArgumentParser(
        prog="brainbench",
        description="Train and compare fMRI-to-vision decoders on the same data.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_world(sub)
    _add_prepare(sub)
    _add_bench(sub)
    desc = sub.add_parser("describe", help="build a method at a scale and print its size")
    desc.add_argument("method")
    desc.add_argument("--scale", default="nsd", help="config name: nsd (real scale) or world")
    sub.add_parser("list", help="methods, their configs, datasets and world presets")
    return parser


# Per adapter: where it lives and which of its keyword arguments come from which CLI option.
_ADAPTERS: dict[str, tuple[str, dict[str, str]]] = {
    "nsd": ("brainbench.data.sources.nsd:prepare_nsd", {"sessions": "sessions", "dataset": "dataset_name"}),
    "god": (
        "brainbench.data.sources.god:prepare_god",
        {"roi": "roi", "images": "images", "image_size": "image_size", "dataset": "dataset_name"},
    ),
    "cc2017": (
        "brainbench.data.sources.cc2017:prepare_cc2017",
        {
            "lag_trs": "lag_trs",
            "volumes_per_run": "volumes_per_run",
            "fps": "fps",
            "frame_size": "frame_size",
            "p_value": "p_value",
            "dataset": "dataset_name",
        },
    ),
    "mindeye": (
        "brainbench.data.sources.mindeye:prepare_mindeye",
        {"version": "version", "test_set": "test_set", "image_size": "image_size"},
    ),
}


def _prepare(args: argparse.Namespace) -> object:
    target, options = _ADAPTERS[args.dataset]
    module, function = target.split(":")
    adapter = getattr(importlib.import_module(module), function)
    kwargs = {name: getattr(args, option) for name, option in options.items()}
    return adapter(
        args.root, args.subject, args.out, val_fraction=args.val_fraction, overwrite=args.overwrite, **kwargs
    )


def _run(args: argparse.Namespace) -> None:
    if args.command == "world":
        from brainbench.world import clip

        if args.world_command == "generate":
            from brainbench.data.preparation import default_home
            from brainbench.data.registry import generate_world_dataset

            root = generate_world_dataset(args.dataset, args.preset, args.subjects, default_home(), args.root)
            print(f"{args.dataset} ({args.preset}) subjects {args.subjects} ready at {root}")
        elif args.world_command == "train-clip":
            from brainbench.world.train_clip import train_world_clip

            card = train_world_clip(args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr)
            print(json.dumps(card, indent=2))
        elif args.world_command == "train-decoder":
            from brainbench.data.preparation import default_home
            from brainbench.generators.train_world_decoder import train_world_decoder

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
            from brainbench.generators.train_video import main as train_video

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
    elif args.command == "bench":
        from brainbench.bench import BenchRequest, format_summary, run_bench
        from brainbench.data.preparation import default_home

        devices = int(args.devices) if args.devices.isdigit() else args.devices
        request = BenchRequest(
            method=args.method,
            subject=args.subject,
            dataset=args.dataset,
            config=args.config,
            data_root=args.data_root,
            world_preset=args.world_preset,
            backbone=args.backbone,
            seed=args.seed,
            home=args.home or default_home(),
            leaderboards=args.leaderboards,
            runs=args.runs,
            accelerator=args.accelerator,
            devices=devices,
            num_nodes=args.num_nodes,
            precision=args.precision,
            compile=args.compile,
            strategy=args.strategy,
            num_workers=args.num_workers,
            val_fraction=args.val_fraction,
            generator=args.generator,
            progress=not args.quiet,
            resume=args.resume,
            logger=args.logger,
        )
        row, result = run_bench(request)
        if row:  # ranks other than 0 of an externally launched DDP job return an empty row
            print(format_summary(result, row, request.leaderboards))
    elif args.command == "describe":
        from brainbench.describe import describe

        info = describe(args.method, args.scale)
        print(
            f"{info['method']} @ {info['scale']}: {info['n_params']:,} parameters "
            f"({info['n_voxels']} voxels -> {info['target_shapes']})"
        )
        print(f"  paper:    {info['paper']}\n  fidelity: {info['fidelity']}")
    elif args.command == "list":
        from brainbench.data.registry import DATASETS
        from brainbench.methods import list_methods, list_scales
        from brainbench.world.config import WORLD_PRESETS

        for method in list_methods():
            print(f"method {method:<10} configs: {', '.join(list_scales(method))}")
        print(f"datasets: {', '.join(DATASETS)}")
        print(f"world presets: {', '.join(WORLD_PRESETS)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; a :class:`BrainbenchError` prints its message (file + fix) instead of a traceback."""
    args = build_parser().parse_args(argv)
    try:
        _run(args)
    except BrainbenchError as error:
        print(f"brainbench: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
