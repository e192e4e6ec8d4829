"""Ridge regression from voxels to flattened backbone targets: the linear baseline of the field.

``W(alpha) = (X^T X + alpha I)^-1 X^T Y`` on centred single-trial voxels ``X`` and centred flattened targets
``Y`` (as in the Brain-Diffuser / Takagi-Nishimoto / Ozcelik line of baselines, and MindEye's ridge stage).
Training is one pass that accumulates the sufficient statistics ``X^T X``, ``X^T Y``, the sums and the count
(all-reduced across processes under DDP); one eigendecomposition of ``X^T X`` then gives the solution for
every ``alpha`` of the grid at once. The grid point with the highest mean per-sample Pearson correlation
between prediction and target on the **validation** split is kept (the pattern correlation retrieval rewards).

Memory is ``O(V^2 + V * T * D)``: fine for the world (2.5k voxels x 8.3k targets); at NSD scale with the
257x768 ViT-L/14 target (15.7k x 197k floats) it needs ~12 GB, so the NSD config regresses ``clip_image``.

Example:
    >>> ridge = RidgeDecoder(n_voxels=20, target_shapes={"clip_tokens": (2, 3)})
    >>> ridge(torch.randn(4, 20))["clip_tokens"].shape
    torch.Size([4, 2, 3])
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn

from brainbench.methods.base import DecoderModule


def _standardise_rows(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True, correction=0).clamp_min(1e-12)


class RidgeDecoder(DecoderModule):
    """Closed-form ridge decoder onto one backbone target (``clip_tokens`` by default).

    Args:
        n_voxels: voxels per sample.
        target_shapes: per-sample shape of ``target``.
        target: which backbone feature to regress.
        alphas: the grid of regularisation strengths (selected on the validation split).
    """

    method_id = "ridge"
    every_sample_once = True  # the sufficient statistics must sum every training sample, as in one process
    method_version = "2"  # v2: validation (alpha choice) on repeat-averaged val images, as the test is scored
    paper = "ridge regression baseline (Hoerl & Kennard 1970; as used by Ozcelik & VanRullen 2023, MindEye)"
    fidelity = "standard closed-form ridge with validation-selected alpha; no paper-specific tricks"

    def __init__(
        self,
        n_voxels: int,
        target_shapes: dict[str, tuple[int, ...]],
        target: str = "clip_tokens",
        alphas: tuple[float, ...] = (1e2, 3e2, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6),
    ) -> None:
        super().__init__(n_voxels, target_shapes)
        self.automatic_optimization = False

    def predicted_names(self) -> tuple[str, ...]:
        """The one target this ridge regresses."""
        return (self.hparams.target,)

    def configure_models(self) -> None:
        """Coefficient buffers (filled by the solve), sized from the voxels and the target."""
        self.target_name = self.hparams.target
        self.target_shape = self.target_shapes[self.target_name]
        n_out = math.prod(self.target_shape)
        v = self.n_voxels
        # Frozen parameters rather than buffers (the state-dict keys are the same), so that :meth:`setup` can
        # unfreeze them for DistributedDataParallel, which refuses a module with no parameter needing a
        # gradient. No optimizer ever steps them; the solve writes them in place.
        self.weight = nn.Parameter(torch.zeros(v, n_out), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(n_out), requires_grad=False)
        self.register_buffer("alpha", torch.tensor(float("nan")))

    def setup(self, stage: str) -> None:
        """Under DDP, lets the coefficients require a gradient while fitting (DDP wraps only for ``fit``)."""
        if stage == "fit" and self.trainer.world_size > 1:
            self.requires_grad_(True)

    def teardown(self, stage: str) -> None:
        """Freezes the coefficients again after a distributed fit."""
        self.requires_grad_(False)

    def on_train_epoch_start(self) -> None:
        """Allocates the sufficient statistics, zeroed, at the start of every training epoch.

        They are float64 and ``X^T X`` alone is 2 GB at NSD scale, so they exist only while fitting, never
        for ``describe`` or a loaded decoder.
        """
        v, n_out = self.weight.shape
        shapes = {"xtx": (v, v), "xty": (v, n_out), "x_sum": (v,), "y_sum": (n_out,), "count": ()}
        for name, shape in shapes.items():
            self.register_buffer(
                name, torch.zeros(shape, dtype=torch.float64, device=self.weight.device), persistent=False
            )
        self._solved = False

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, V)`` -> ``{target: (B, *target_shape)}``."""
        flat = voxels @ self.weight + self.bias
        return {self.target_name: flat.view(len(voxels), *self.target_shape)}

    def n_parameters(self) -> int:
        """Fitted coefficients (weights and intercepts), which ridge keeps as buffers."""
        return self.weight.numel() + self.bias.numel()

    def configure_optimizers(self) -> None:
        """None: ridge is solved in closed form."""
        return None

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Accumulates the sufficient statistics of a batch."""
        x = batch["voxels"].double()
        y = batch[self.target_name].flatten(1).double()
        self.xtx += x.T @ x
        self.xty += x.T @ y
        self.x_sum += x.sum(0)
        self.y_sum += y.sum(0)
        self.count += len(x)

    def on_validation_epoch_start(self) -> None:
        """Solves before validation scores the alphas (Lightning validates before ``on_train_epoch_end``)."""
        if not self.trainer.sanity_checking:
            self._solve()

    def on_train_epoch_end(self) -> None:
        """Solves when no validation ran this epoch (the solution then keeps the middle alpha)."""
        if not self._solved:
            self._solve()

    def _solve(self) -> None:
        """All-reduces the statistics and solves for every alpha through one eigendecomposition.

        Every rank calls this at the same point (after its last training batch), so the sum-reduce of the
        sufficient statistics is one collective per epoch and the DDP solution equals the single-process one.
        """
        self._solved = True
        for name in ("xtx", "xty", "x_sum", "y_sum", "count"):
            setattr(self, name, self.trainer.strategy.reduce(getattr(self, name), reduce_op="sum"))
        n = self.count
        x_mean, y_mean = self.x_sum / n, self.y_sum / n
        xtx = self.xtx - n * torch.outer(x_mean, x_mean)
        xty = self.xty - n * torch.outer(x_mean, y_mean)
        self._eigvals, self._eigvecs = torch.linalg.eigh(xtx)
        self._projected = self._eigvecs.T @ xty
        self._means = (x_mean, y_mean)
        self._val_scores = torch.zeros(len(self.hparams.alphas), dtype=torch.float64, device=xtx.device)
        self._val_count = 0
        self._set_alpha(len(self.hparams.alphas) // 2)

    def _solution(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.hparams.alphas[k]
        weight = self._eigvecs @ (self._projected / (self._eigvals + alpha)[:, None])
        x_mean, y_mean = self._means
        return weight, y_mean - x_mean @ weight

    @torch.no_grad()
    def _set_alpha(self, k: int) -> None:
        weight, bias = self._solution(k)
        self.weight.copy_(weight.float())
        self.bias.copy_(bias.float())
        self.alpha.fill_(self.hparams.alphas[k])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Scores every alpha in the eigenbasis: ``pred = ((x - m) Q / (lambda + alpha)) P + y_mean``."""
        if self.trainer.sanity_checking:
            return
        x_mean, y_mean = self._means
        x_rotated = (batch["voxels"].double() - x_mean) @ self._eigvecs
        y = _standardise_rows(batch[self.target_name].flatten(1).double())
        for k, alpha in enumerate(self.hparams.alphas):
            pred = _standardise_rows((x_rotated / (self._eigvals + alpha)) @ self._projected + y_mean)
            self._val_scores[k] += (pred * y).mean(1).sum()
        self._val_count += len(x_rotated)

    def on_validation_epoch_end(self) -> None:
        """Keeps the alpha with the best validation pattern correlation (summed over processes)."""
        if self.trainer.sanity_checking:
            return
        scores = self.trainer.strategy.reduce(self._val_scores, reduce_op="sum")
        best = int(torch.argmax(scores))
        self._set_alpha(best)
        n_val = self.trainer.strategy.reduce(torch.tensor(float(self._val_count)), reduce_op="sum")
        self.log("val_pattern_r", scores[best].item() / max(1.0, float(n_val)), sync_dist=False)
        self.log("alpha", float(self.hparams.alphas[best]), sync_dist=False)

    def fit(
        self, trainer: L.Trainer, datamodule: L.LightningDataModule, ckpt_path: str | None = None
    ) -> None:
        """One pass over the training split to accumulate, the solve, then validation to pick alpha.

        All inside one ``trainer.fit`` (the solve runs in :meth:`on_validation_epoch_start`): under DDP with
        Lightning's process launchers each ``fit``/``validate`` call starts new processes and only the fitted
        weights come back, so the eigendecomposition must not outlive the call that computed it. The loaders
        are built by the datamodule inside each process, so they know their rank.
        """
        trainer.fit(self, datamodule=datamodule, ckpt_path=ckpt_path)
