"""How well an SAE reconstructs its activation, over batches of text (the definitions of SAELens' `evals.py` and
Gao et al. 2024, "Scaling and evaluating sparse autoencoders", section 2 and 4):

    explained variance = 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2     sums over every token, mean over them
    loss recovered     = (CE_zero - CE_sae) / (CE_zero - CE_clean)          1: as good as the model, 0: as ablation
    CE: mean next-token cross-entropy in nats; CE_sae with the reconstruction spliced into the forward pass in
    place of the activation (activations.replace), CE_zero with the activation zero-ablated (activations.zero)
    L0 = mean active latents per token; dead fraction = share of latents active on none of the tokens

    >>> metrics = measure(bundle, sae, batches)          # batches of token ids [batch, pos]
    >>> metrics.explained_variance, metrics.loss_recovered, metrics.l0, metrics.dead_fraction
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from interp_core import activations
from interp_core.features.sae import SAE
from interp_core.loading import ModelBundle

Progress = Callable[[float, str], None]


@dataclass(frozen=True, eq=False)
class SAEMetrics:
    """One SAE's reconstruction quality over `tokens` tokens (see the module docstring)."""

    explained_variance: float
    loss_recovered: float  # nan without the loss passes, or when zero ablation costs nothing
    ce_clean: float  # nats per predicted token
    ce_sae: float
    ce_zero: float
    l0: float  # active latents per token
    dead_fraction: float
    tokens: int
    frequency: torch.Tensor  # [d_sae] share of the tokens on which each latent is active

    def __post_init__(self) -> None:
        if self.frequency.dim() != 1:
            raise ValueError(f"SAEMetrics.frequency is {tuple(self.frequency.shape)}, expected [d_sae]")

    def to_dict(self) -> dict[str, float | int]:
        """The scalar metrics, rounded for a card or a download."""
        names = ("explained_variance", "loss_recovered", "ce_clean", "ce_sae", "ce_zero", "l0", "dead_fraction")
        return {**{name: round(float(getattr(self, name)), 6) for name in names}, "tokens": self.tokens}


@dataclass
class _Sums:
    """Running sums over batches (float64)."""

    squared_error: float = 0.0
    total: torch.Tensor | None = None  # [d_in] sum of x
    squares: float = 0.0  # sum of ||x||^2
    tokens: int = 0
    active: torch.Tensor | None = None  # [d_sae] tokens each latent was active on
    ce: tuple[float, float, float] = (0.0, 0.0, 0.0)  # summed cross-entropy: clean, sae, zero
    predicted: int = 0

    def add_reconstruction(self, x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor) -> None:
        x, x_hat = x.reshape(-1, x.shape[-1]).double(), x_hat.reshape(-1, x.shape[-1]).double()
        self.squared_error += float((x - x_hat).pow(2).sum())
        self.total = x.sum(0) if self.total is None else self.total + x.sum(0)
        self.squares += float(x.pow(2).sum())
        self.tokens += x.shape[0]
        active = (f.reshape(-1, f.shape[-1]) > 0).sum(0)
        self.active = active if self.active is None else self.active + active

    def explained_variance(self) -> float:
        variance = self.squares - float(self.total.pow(2).sum()) / self.tokens  # sum ||x - mean||^2
        return 1 - self.squared_error / variance if variance > 0 else float("nan")


def _cross_entropy(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """Summed next-token cross-entropy (nats) of logits [batch, pos, d_vocab] on ids [batch, pos]."""
    return float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(),
                                                   reduction="sum"))


def measure(bundle: ModelBundle, sae: SAE, batches: Iterable[torch.Tensor], loss: bool = True,
            progress: Progress | None = None) -> SAEMetrics:
    """The metrics of `sae` over `batches` (token ids [batch, pos]): one forward pass per batch, and with `loss`
    two more (the reconstruction spliced in, the activation zero-ablated) for the loss recovered."""
    batches = list(batches)
    if not batches:
        raise ValueError("Measuring an SAE needs at least one batch of text")
    sums, name = _Sums(), sae.hook_name
    with torch.no_grad():
        for i, ids in enumerate(batches):
            clean = activations.run(bundle, ids, record=[name], logits_to_keep=0, fused_attention=True)
            x = clean.acts[name]
            f = sae.encode(x)
            x_hat = sae.decode(f).to(x.dtype)
            sums.add_reconstruction(x, x_hat, f)
            if loss:
                spliced = activations.run(bundle, ids, edits={name: activations.replace(x_hat)}, logits_to_keep=0,
                                          fused_attention=True).logits
                ablated = activations.run(bundle, ids, edits={name: activations.zero()}, logits_to_keep=0,
                                          fused_attention=True).logits
                ids = ids.to(clean.logits.device)
                sums.ce = tuple(s + _cross_entropy(logits, ids) for s, logits
                                in zip(sums.ce, (clean.logits, spliced, ablated), strict=True))
                sums.predicted += ids.shape[0] * (ids.shape[1] - 1)
            if progress:
                progress((i + 1) / len(batches), f"Measuring the SAE: batch {i + 1} of {len(batches)}")
    return _metrics(sums, loss)


def _metrics(sums: _Sums, loss: bool) -> SAEMetrics:
    nan = float("nan")
    clean, spliced, ablated = (s / sums.predicted for s in sums.ce) if loss and sums.predicted else (nan,) * 3
    recovered = (ablated - spliced) / (ablated - clean) if loss and ablated != clean else nan
    frequency = (sums.active.double() / sums.tokens).float()
    return SAEMetrics(explained_variance=sums.explained_variance(), loss_recovered=recovered, ce_clean=clean,
                      ce_sae=spliced, ce_zero=ablated, l0=float(sums.active.sum()) / sums.tokens,
                      dead_fraction=float((sums.active == 0).float().mean()), tokens=sums.tokens,
                      frequency=frequency)
