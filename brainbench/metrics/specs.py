"""Metric specifications: what a leaderboard column means, frozen and versioned.

A :class:`MetricSpec` pins one number's definition: the metric, the embedding space (``network``) it was
computed in, its parameters (pool size, draws, seed, variant, ...) and a version. The leaderboard stores
the full spec id as the column name, so numbers computed with different definitions never share a column.

Id grammar (brain-score style)::

    <metric>[/<network>]@v<N>

e.g. ``retrieval_b2i_top1_subset300/world-clip-v1.clip_tokens@v1`` or ``identification_2way@v1``.
``<metric>`` contains neither ``/`` nor ``@``; ``<network>`` may contain ``/`` and ``:`` (open_clip ids such
as ``ViT-L-14:openai`` or ``hf-hub:org/model``) but not ``@``. Changing what a metric computes (its
equation, preprocessing or protocol) means bumping ``N``; changing only its parameters (pool, draws, seed)
is recorded in ``params``, and parameters that change the number's meaning (the pool size of an N-way
retrieval) are part of ``<metric>`` itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from brainbench.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_ID_RE = re.compile(r"^(?P<name>[^/@]+)(?:/(?P<network>[^@]+))?@v(?P<version>[0-9]+)$")


def _frozen(params: Mapping[str, object]) -> Mapping[str, object]:
    return MappingProxyType(dict(params))


@dataclass(frozen=True)
class MetricSpec:
    """The frozen definition of one metric column.

    Attributes:
        name: metric name, e.g. ``retrieval_b2i_top1_subset300``; letters, digits, ``_``, ``.``, ``-``.
        network: the embedding space the metric is computed in, e.g. ``world-clip-v1.clip_tokens`` or
            ``ViT-L-14:openai``. Supplied at evaluation time, never hard-coded; empty for metrics that use
            no network.
        version: positive integer, bumped whenever what the metric computes changes.
        higher_is_better: sort direction for tables and plots.
        params: read-only mapping of the parameters used (pool size, draws, seed, variant, ...).
        description: one sentence a report can print under the column.

    Example:
        >>> MetricSpec("identification_2way", "world-clip-v1.clip_image", 1, True).id
        'identification_2way/world-clip-v1.clip_image@v1'
    """

    name: str
    network: str
    version: int
    higher_is_better: bool
    params: Mapping[str, object] = field(default_factory=dict, hash=False)
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(
                f"metric name {self.name!r} is not valid\n  fix: use letters, digits, '_', '.', '-' only"
            )
        if "@" in self.network or self.network.startswith("/"):
            raise ConfigError(
                f"network {self.network!r} is not valid\n  fix: a network id may not contain '@' "
                "or start with '/'"
            )
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ConfigError(f"metric version {self.version!r} is not valid\n  fix: use an integer >= 1")
        object.__setattr__(self, "params", _frozen(self.params))

    @property
    def id(self) -> str:
        """The column id ``<metric>[/<network>]@v<N>``."""
        if self.network:
            return f"{self.name}/{self.network}@v{self.version}"
        return f"{self.name}@v{self.version}"

    def with_network(self, network: str) -> MetricSpec:
        """Return a copy of this spec computed in ``network`` (everything else unchanged)."""
        return replace(self, network=network)


def parse_metric_id(metric_id: str) -> tuple[str, str, int]:
    """Split a spec id into ``(name, network, version)``; ``network`` is ``""`` when absent.

    Args:
        metric_id: a string following ``<metric>[/<network>]@v<N>``.

    Returns:
        The three parts; the inverse of :attr:`MetricSpec.id`.

    Raises:
        ConfigError: when ``metric_id`` does not follow the grammar.

    Example:
        >>> parse_metric_id("retrieval_b2i_top1_full/ViT-L-14:openai.clip_image@v2")
        ('retrieval_b2i_top1_full', 'ViT-L-14:openai.clip_image', 2)
    """
    match = _ID_RE.match(metric_id)
    if match is None or not _NAME_RE.match(match["name"]):
        raise ConfigError(
            f"{metric_id!r} is not a metric id\n  fix: use the grammar <metric>[/<network>]@v<N>, "
            "e.g. identification_2way/world-clip-v1.clip_image@v1"
        )
    return match["name"], match["network"] or "", int(match["version"])


def is_metric_id(column: str) -> bool:
    """Whether ``column`` follows the metric id grammar (used to tell metric from provenance columns)."""
    try:
        parse_metric_id(column)
    except ConfigError:
        return False
    return True
