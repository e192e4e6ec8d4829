"""Shard reading throughput: samples/s of the training stream, local and streamed (pipe: and http).

Measures the full DataModule path a training step sees (tar reading, safe decoding, shuffle buffer, collate,
feature-cache lookup of the targets), for each source of the same shards:

- ``local``: the prepared folder;
- ``pipe``: ``pipe:cat <folder>/{path}`` (what ``pipe:curl``/``pipe:aws s3 cp`` streaming looks like);
- ``http``: an HTTP server on localhost (webdataset opens ``http://`` URLs through curl);
- ``in-memory``: the local shards read once, then every epoch served from memory (the default for splits
  that fit, see :mod:`brainbench.data.in_memory`); its first epoch is the one-off read.

The three shard sources stream every epoch (``in_memory=False``).

Usage::

    python benchmarks/shard_throughput.py --prepared ~/.cache/brainbench/prepared/world-nsd-v1-small/subj01
    python benchmarks/shard_throughput.py --prepared ... --num-workers 2 --epochs 3 --json out.json

The feature cache must exist (any ``make bench`` on that subject builds it). Prints one line per source with
the median samples/s over the epochs after the first (the first warms the page cache).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import statistics
import threading
import time
import warnings
from pathlib import Path

from brainbench.data.datamodule import FMRIDataModule


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """No access log on stderr."""


def _serve(directory: Path) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def measure(datamodule: FMRIDataModule, epochs: int) -> list[float]:
    """Samples/s of each full pass over the training loader."""
    rates = []
    for _ in range(epochs):
        start, n = time.perf_counter(), 0
        for batch in datamodule.train_dataloader():
            n += len(batch["stim_id"])
        rates.append(n / (time.perf_counter() - start))
    return rates


def main() -> None:
    """Runs every source and prints (and optionally saves) the rates."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--prepared", type=Path, required=True, help="a prepared subject folder")
    parser.add_argument("--backbone", default="world-clip:v1", help="backbone whose feature cache exists")
    parser.add_argument("--targets", nargs="+", default=["clip_tokens"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--shuffle-buffer", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=r".*with_length\(\) only sets the value")

    server = _serve(args.prepared)
    sources = {  # name: (shard url, training split held in memory after the first epoch)
        "local": (None, False),
        "pipe": (f"pipe:cat {args.prepared.resolve()}/{{path}}", False),
        "http": (f"http://127.0.0.1:{server.server_port}", False),
        "in-memory": (None, True),
    }
    results = {}
    try:
        for name, (url, in_memory) in sources.items():
            datamodule = FMRIDataModule(
                args.prepared,
                backbone=args.backbone,
                targets=args.targets,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                shuffle_buffer=args.shuffle_buffer,
                shard_url=url,
                in_memory=in_memory,
            )
            datamodule.setup("fit")
            rates = measure(datamodule, args.epochs)
            steady = statistics.median(rates[1:]) if len(rates) > 1 else rates[0]
            results[name] = {"samples_per_s": round(steady, 1), "epochs": [round(r, 1) for r in rates]}
            print(f"{name:>9}: {steady:9.0f} samples/s  (epochs: {', '.join(f'{r:.0f}' for r in rates)})")
    finally:
        server.shutdown()
    n_train = FMRIDataModule(args.prepared, backbone=args.backbone, targets=args.targets).split_size("train")
    summary = {"prepared": str(args.prepared), "n_train": n_train, **vars(args), "results": results}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
