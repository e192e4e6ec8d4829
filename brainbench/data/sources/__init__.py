"""Dataset adapters: a raw layout -> webdataset shards, a stimulus store and a manifest.

Each adapter is ``prepare_<x>(root, subject, out, *, ..., val_fraction, dataset, progress, overwrite)``;
:data:`ADAPTERS` maps its id to it (imported on use), and ``brainbench prepare <id>`` builds its options from
the function's signature and docstring.
"""

from __future__ import annotations

from collections.abc import Callable

from brainbench.registry import Registry

#: adapter id -> ``prepare_<id>`` function
ADAPTERS: Registry[Callable[..., object]] = Registry(
    "adapter",
    {
        "nsd": "brainbench.data.sources.nsd:prepare_nsd",
        "god": "brainbench.data.sources.god:prepare_god",
        "cc2017": "brainbench.data.sources.cc2017:prepare_cc2017",
        "mindeye": "brainbench.data.sources.mindeye:prepare_mindeye",
    },
)

#: one line per adapter for ``brainbench prepare --help`` (listed without importing the adapters)
ADAPTER_SUMMARIES: dict[str, str] = {
    "nsd": "an NSD copy (the bucket layout) or the world's NSD-layout output",
    "god": "Generic Object Decoding: bdpy SubjectN.h5 + stimulus tsv files",
    "cc2017": "CC2017 video fMRI (Wen et al. 2018): CIFTI runs + mp4 movies",
    "mindeye": "MindEye1 webdataset_avg_split or MindEye2 wds/ downloads",
}

__all__ = ["ADAPTERS", "ADAPTER_SUMMARIES"]
