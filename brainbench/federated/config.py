"""The settings of one federated run, flat so that Flower's run config can carry them.

A run is described by :class:`FederatedConfig`. Its fields are plain ``str``/``int``/``float``/``bool`` so the
same object becomes a Flower run config (``flwr run --run-config`` or the app's ``[tool.flwr.app.config]``)
and comes back from one (:meth:`FederatedConfig.from_run_config`), and the in-process simulation and a
SuperLink/SuperNode deployment train exactly the same thing. Defaults live in
``brainbench/configs/pmcmfl/world.yaml`` (:func:`load_federated_config`).

Methods (``method``):

==================  ===================================================================================
``pmcmfl``          PmcmFL (Bao et al., arXiv 2312.13508): prototype masks for missing modalities, the
                    fusion-prototype contrast from round 2, prototype masks at test time
``pmcmfl-nocontrast`` the same without the prototype contrast (the ablation)
``fedavg-zero``     FedAvg, a missing modality's representation is zeros (train and test)
``fedavg-random``   FedAvg, a missing modality's representation is standard-normal noise (train and test)
``fedavg-pairs``    FedAvg on complete samples only (fMRI + image + caption); zeros stand in at test time
``centralised``     every subject at one site, no modality missing (upper bound), PmcmFL's masks at test
==================  ===================================================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from brainbench.errors import ConfigError

FederatedMethod = Literal[
    "pmcmfl", "pmcmfl-nocontrast", "fedavg-zero", "fedavg-random", "fedavg-pairs", "centralised"
]
METHODS: tuple[str, ...] = (
    "pmcmfl",
    "pmcmfl-nocontrast",
    "fedavg-zero",
    "fedavg-random",
    "fedavg-pairs",
    "centralised",
)
#: the fill of a missing modality's representation, per method (training and test time)
FILL: dict[str, str] = {
    "pmcmfl": "prototype",
    "pmcmfl-nocontrast": "prototype",
    "fedavg-zero": "zero",
    "fedavg-random": "random",
    "fedavg-pairs": "zero",
    "centralised": "prototype",
}
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "pmcmfl"


@dataclass(frozen=True)
class FederatedConfig:
    """One federated run (all fields travel in Flower's run config).

    Attributes:
        method: one of :data:`METHODS`.
        dataset: a prepared dataset id (``world-nsd``).
        subjects: ``+``-joined subject numbers the sites hold, e.g. ``1+2+5+7``.
        sites: number of sites (Flower SuperNodes); see :func:`brainbench.federated.partition.assign_sites`.
        missing: probability ``p`` that each non-brain modality (image, caption) of a training sample is
            missing, drawn independently per sample and modality.
        rounds: federated rounds.
        local_epochs: epochs over a site's training trials per round.
        dirichlet_alpha: label skew across the sites sharing a subject (Dirichlet concentration over sites per
            class); ``0`` splits trials uniformly at random.
        batch_size: samples per local step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (PmcmFL: 1e-4).
        n_classes: categories of the label space the consortium agreed on (the world's 57).
        feature_dim: width of the image and caption embeddings (the world CLIP's 128).
        local_dim: width of each subject's input layer (stays on its site).
        embed_dim: width of every modality representation, the fusion and the prototypes.
        hidden_dim: width of the classification head's hidden layer.
        contrast_weight: weight of the fusion-prototype contrast (PmcmFL: 0.01).
        unimodal_contrast_weight: weight of the image and caption prototype contrasts (PmcmFL: 1e-8).
        contrast_start_round: first round with the contrast (PmcmFL: 2).
        temperature: the contrast's fixed temperature (PmcmFL: 0.07).
        seed: seed of the partition, the missingness, the initialisation and the data order.
        backbone: the feature cache holding the image and caption embeddings.
        evaluate_every: the sites evaluate after every ``k``-th round and the last (``0``: the last only).
        world_preset: size of an embedded world (``small``; ``tiny`` for tests).
        max_trials: keep at most this many training trials per site (``0``: all; tests use a few).
        home: cache folder of prepared datasets (``""``: the default home).
        out_dir: where the server writes the global model and metrics (``""``: nowhere).
    """

    method: str = "pmcmfl"
    dataset: str = "world-nsd"
    subjects: str = "1+2+5+7"
    sites: int = 8
    missing: float = 0.5
    rounds: int = 10
    local_epochs: int = 1
    dirichlet_alpha: float = 0.0
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    n_classes: int = 57
    feature_dim: int = 128
    local_dim: int = 64
    embed_dim: int = 64
    hidden_dim: int = 128
    contrast_weight: float = 0.01
    unimodal_contrast_weight: float = 1e-8
    contrast_start_round: int = 2
    temperature: float = 0.07
    seed: int = 0
    backbone: str = "world-clip:v1"
    world_preset: str = "small"
    evaluate_every: int = 0
    max_trials: int = 0
    home: str = ""
    out_dir: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown federated method {self.method!r}\n  fix: use one of {METHODS}")
        if not 0.0 <= self.missing < 1.0:
            raise ConfigError(f"missing must be in [0, 1), not {self.missing}")
        if self.sites < 1 or self.rounds < 1 or self.local_epochs < 1:
            raise ConfigError("sites, rounds and local_epochs must be positive")
        if self.dirichlet_alpha < 0:
            raise ConfigError(f"dirichlet_alpha must be >= 0 (0: uniform split), not {self.dirichlet_alpha}")
        self.subject_list()

    def subject_list(self) -> list[int]:
        """The subjects as numbers, e.g. ``[1, 2, 5, 7]``."""
        try:
            subjects = [int(s) for s in str(self.subjects).split("+") if s]
        except ValueError as error:
            raise ConfigError(f"subjects must be '+'-joined numbers, not {self.subjects!r}") from error
        if not subjects:
            raise ConfigError("no subject given")
        return subjects

    def evaluate_rounds(self) -> set[int]:
        """The rounds after which the sites evaluate the global model."""
        every = (
            set(range(self.evaluate_every, self.rounds + 1, self.evaluate_every))
            if self.evaluate_every
            else set()
        )
        return every | {self.rounds}

    @property
    def fill(self) -> str:
        """How a missing modality's representation is filled: ``prototype``, ``zero`` or ``random``."""
        return FILL[self.method]

    @property
    def uses_contrast(self) -> bool:
        """Whether the prototype contrast is on."""
        return self.method in ("pmcmfl", "centralised")

    def replace(self, **changes: Any) -> FederatedConfig:  # noqa: ANN401
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def to_run_config(self) -> dict[str, str | int | float | bool]:
        """The flat dict Flower carries (keys use ``-`` as Flower's config keys do)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> FederatedConfig:
        """The config back from a Flower run config (unknown keys are ignored; absent ones keep defaults)."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            name = str(key).replace("-", "_")
            if name in known:
                kind = type(getattr(cls(), name))
                values[name] = kind(value)
        return cls(**values)


def load_federated_config(name_or_path: str = "world", **overrides: Any) -> FederatedConfig:  # noqa: ANN401
    """The config ``brainbench/configs/pmcmfl/<name>.yaml`` (or a YAML path) with ``overrides`` applied."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"no federated config {path}\n  fix: use one of {sorted(CONFIG_DIR.glob('*.yaml'))}"
        )
    values = yaml.safe_load(path.read_text()) or {}
    unknown = set(values) - {f.name for f in fields(FederatedConfig)}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return FederatedConfig(**values)
