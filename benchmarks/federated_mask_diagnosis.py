"""Which test-time mask PmcmFL's head trusts: the card's diagnosis of the fMRI-only result.

One site holding subject 1 trains PmcmFL (p = 0.5, 10 rounds of one local epoch, its own library as the
global one, no Flower: `brainbench.federated.local` directly), then decodes the test scenes from the fMRI
alone with four stand-ins for the image and caption: the prototypes of the class nearest in fMRI-prototype
space (what `evaluate_site` does), of the true class (an oracle, to show the head reads the mask as label
evidence), zeros, and noise.

    python benchmarks/federated_mask_diagnosis.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from brainbench.federated.config import load_federated_config
from brainbench.federated.local import average_precision, represent, site_prototypes, train_site
from brainbench.federated.model import SiteInputs, build_shared, fill_missing
from brainbench.federated.prototypes import init_prototypes
from brainbench.federated.site_data import load_site


def main() -> None:
    torch.set_num_threads(1)
    config = load_federated_config("world", subjects="1", sites=1, missing=0.5, rounds=10)
    site = load_site(0, config)
    shared = build_shared(config)
    torch.manual_seed(1)
    inputs = SiteInputs(site.n_voxels, config.local_dim)
    library = init_prototypes(config.n_classes, config.embed_dim, seed=1)
    for server_round in range(1, config.rounds + 1):
        train_site(shared, inputs, site, library, config, server_round)
        library = site_prototypes(shared, inputs, site, library, config)
    shared.eval()
    inputs.eval()
    trials = site.test[1]
    absent = torch.zeros(len(trials), dtype=torch.bool)
    with torch.no_grad():
        reps = represent(shared, inputs, 1, trials, torch.arange(len(trials)))
        nearest = (F.normalize(reps["fmri"], dim=1) @ F.normalize(library["fmri"], dim=1).T).argmax(dim=1)
        hit = float(trials.labels[torch.arange(len(trials)), nearest].mean())
        print(f"nearest fMRI prototype is a scene category: {hit:.3f}")
        variants = {
            "nearest-fMRI-prototype mask": ("prototype", nearest),
            "true-class mask (oracle)": ("prototype", trials.classes),
            "zeros": ("zero", None),
            "noise": ("random", None),
            "multimodal (no mask)": (None, None),
        }
        for name, (fill, classes) in variants.items():
            if fill is None:
                filled = reps
            else:
                present = {"image": absent, "text": absent}
                filled = fill_missing(reps, present, fill, classes, library, torch.Generator().manual_seed(0))
            scores = shared.head(shared.fuse(filled))
            top1 = float(trials.labels[torch.arange(len(trials)), scores.argmax(dim=1)].mean())
            print(f"{name:32s} top-1 {top1:.3f}  mAP {average_precision(scores, trials.labels):.3f}")


if __name__ == "__main__":
    main()
