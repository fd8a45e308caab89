"""Train a TopK or BatchTopK sparse autoencoder on activations streamed from the model (through the activation API).

The recipe of Gao et al. 2024 ("Scaling and evaluating sparse autoencoders") as SAELens implements it
(`sae_lens/saes/topk_sae.py`, `batchtopk_sae.py`, `training/sae_trainer.py`):

    loss = ||x - x_hat||^2 + aux_coefficient * scale * ||e - e_hat||^2          (sums over d_in, mean over tokens)

e = x - x_hat (detached) is the residual error and e_hat = a W_dec its reconstruction by the aux_k dead latents
with the largest pre-activations (a: those pre-activations, no ReLU, as SAELens), scale = min(n_dead / aux_k, 1);
a latent is dead when it has not fired in the last `dead_tokens` training tokens. Decoder rows stay at unit norm
(the gradient parallel to each row is projected out before the Adam step and the rows renormalised after it).
b_dec starts at the geometric median of the first batch, W_dec at random unit rows and W_enc at W_dec
transposed, b_enc at zero. BatchTopK (Bussmann et al. 2024) keeps the k x batch largest activations of the whole
batch and is saved as a JumpReLU SAE whose threshold is the running mean of the smallest kept activation.

Activations are scaled so that their mean norm is sqrt(d_in) (SAELens' `expected_average_only_in`) while
training, and the scale is folded into the biases (and threshold) at the end, so the saved SAE reads the raw
activation with `normalize_activations: "none"` and its decoder rows at unit norm.

Only the latents a batch selects enter the gradient: their pre-activations are recomputed from gathered encoder
rows and decoded by gathered decoder rows, so a step costs one dense [batch, d_in] x [d_in, d_sae] product.

    >>> training = train(bundle, id_batches, TrainSettings("blocks.2.hook_resid_pre", d_sae=2048, k=12))
    >>> training.sae.encode(acts), training.fvu[-1], training.tokens_per_second
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from interp_core import activations
from interp_core.errors import UserInputError
from interp_core.features.sae import SAE, activation_width
from interp_core.loading import ModelBundle
from interp_core.settings import Limits

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class TrainSettings:
    """How to train one SAE; the defaults are the shipped organism SAE's."""

    hook_name: str  # the activation it reads, a TransformerLens name
    d_sae: int = 2048  # 16 latents per dimension of a 128-wide residual
    k: int = 12  # latents per token (BatchTopK: on average)
    batch_topk: bool = False  # BatchTopK instead of TopK
    tokens: int = 2_000_000  # training tokens (the organism: ~0.95 explained variance at k 12 by 2 M)
    batch_tokens: int = 4096  # activations per Adam step (Gao et al. and SAELens use 4,096)
    lr: float = 2e-3  # Adam; the activations are scaled to mean norm sqrt(d_in) whatever the model
    warmup_fraction: float = 0.01  # linear warm-up over the first 1% of steps
    decay_fraction: float = 0.2  # linear decay to zero over the last 20% (SAELens' lr_decay_steps)
    aux_k: int | None = None  # dead latents in the auxiliary loss; None: d_in / 2 (Gao et al. appendix B.1)
    aux_coefficient: float = 1 / 32  # Gao et al. 2024
    dead_tokens: int = 100_000  # not fired in this many recent tokens: dead (Gao et al.: 10 M, for far longer runs;
    # on the organism 100 k left 0.4% of 2,048 latents dead on 262 k held-out tokens after 6 M, 500 k left 3.5%)
    buffer_tokens: int = 65_536  # activations shuffled together (16 model batches of 32 x 128 tokens)
    threshold_lr: float = 0.01  # BatchTopK's running threshold (SAELens' topk_threshold_lr)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.k <= self.d_sae:
            raise UserInputError(f"k must be from 1 to the dictionary size ({self.d_sae}), not {self.k}.")
        if self.batch_tokens < 1 or self.tokens < self.batch_tokens:
            raise UserInputError(f"Training needs at least one batch of {self.batch_tokens} tokens.")

    @property
    def steps(self) -> int:
        return self.tokens // self.batch_tokens


def check_limits(settings: TrainSettings, limits: Limits) -> None:
    """Raise UserInputError if user-started training would exceed `limits` (the caps of `settings.limits()`)."""
    if settings.tokens > limits.max_sae_train_tokens:
        raise UserInputError(f"Training on {settings.tokens:,} tokens is above the cap of "
                             f"{limits.max_sae_train_tokens:,}; choose fewer tokens.")
    if settings.d_sae > limits.max_sae_latents:
        raise UserInputError(f"A dictionary of {settings.d_sae:,} latents is above the cap of "
                             f"{limits.max_sae_latents:,}; choose a smaller one.")


@dataclass(frozen=True, eq=False)
class Training:
    """A trained SAE and its curve: one value per Adam step."""

    sae: SAE
    fvu: tuple[float, ...]  # [step] ||x - x_hat||^2 / ||x - mean(x)||^2 over the step's batch (1 - explained var.)
    aux_loss: tuple[float, ...]  # [step] the auxiliary loss before its coefficient (0 while no latent is dead)
    dead_fraction: tuple[float, ...]  # [step] share of latents dead by `dead_tokens`
    tokens: int
    seconds: float
    settings: TrainSettings

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


class _Reached(Exception):
    """Raised by the edit at the recorded activation: the rest of the forward pass is not needed."""

    def __init__(self, act: torch.Tensor) -> None:
        super().__init__()
        self.act = act


def recorded_activation(bundle: ModelBundle, ids: torch.Tensor, hook_name: str) -> torch.Tensor:
    """Activation `hook_name` [batch, pos, d_in] (detached) of ids [batch, pos]: the activation API's hooks
    (fused attention, no gradients), with the forward pass stopped where the activation is reached, as SAELens'
    ActivationsStore does with `stop_at_layer` (half the organism's blocks for blocks.2.hook_resid_pre)."""
    def stop(act: torch.Tensor) -> torch.Tensor:
        raise _Reached(act.detach())

    try:
        with torch.no_grad(), activations.hooks_on(bundle, edits={hook_name: stop}, fused_attention=True):
            activations.forward(bundle, ids)
    except _Reached as reached:
        return reached.act
    raise RuntimeError(f"No forward pass reached {hook_name}; the adapter does not match the model")


def activation_batches(bundle: ModelBundle, hook_name: str, id_batches: Iterable[torch.Tensor], batch_tokens: int,
                       buffer_tokens: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Batches [batch_tokens, d_in] (float32) of activation `hook_name` over `id_batches` ([batch, pos] ids): each
    model batch is recorded by `recorded_activation`, and SAELens' mixing buffer shuffles up to
    `buffer_tokens` of them together and hands out half before refilling."""
    buffer: list[torch.Tensor] = []
    held = 0
    for ids in id_batches:
        act = recorded_activation(bundle, ids, hook_name)
        buffer.append(act.reshape(-1, act.shape[-1]).float())  # [batch * pos, d_in]
        held += buffer[-1].shape[0]
        if held < buffer_tokens:
            continue
        mixed = torch.cat(buffer)
        mixed = mixed[torch.randperm(len(mixed), generator=generator)]
        out = (len(mixed) // 2) // batch_tokens * batch_tokens or len(mixed) // batch_tokens * batch_tokens
        yield from mixed[:out].split(batch_tokens)
        buffer, held = [mixed[out:]], len(mixed) - out


def geometric_median(points: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """[d] the geometric median of points [n, d] (Weiszfeld's iterations from the mean)."""
    median = points.mean(0)
    for _ in range(iterations):
        weights = 1 / (points - median).norm(dim=-1).clamp_min(1e-8)  # [n]
        median = (weights[:, None] * points).sum(0) / weights.sum()
    return median


@dataclass
class _Params:
    """The trainable tensors, the encoder stored as rows ([d_sae, d_in]) so selected latents gather rows."""

    enc: torch.Tensor  # [d_sae, d_in] W_enc transposed
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_in], unit rows
    b_dec: torch.Tensor  # [d_in]

    @classmethod
    def initial(cls, first: torch.Tensor, d_sae: int, generator: torch.Generator) -> _Params:
        d_in = first.shape[1]
        W_dec = torch.randn(d_sae, d_in, generator=generator)
        W_dec /= W_dec.norm(dim=-1, keepdim=True)
        params = cls(W_dec.clone(), torch.zeros(d_sae), W_dec, geometric_median(first))
        for tensor in params.all():
            tensor.requires_grad_(True)
        return params

    def all(self) -> list[torch.Tensor]:
        return [self.enc, self.b_enc, self.W_dec, self.b_dec]


def _select(hidden: torch.Tensor, settings: TrainSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(cols, keep), both [batch, kept]: the latents kept in each row of hidden [batch, d_sae] and which of those
    slots count. TopK: the k largest of each row, all counted. BatchTopK: the k x batch largest of the batch, as
    many slots per row as the fullest row needs (the unused ones not counted)."""
    if not settings.batch_topk:
        return hidden.topk(settings.k, dim=-1, sorted=False).indices, torch.ones(len(hidden), settings.k)
    chosen = torch.zeros(hidden.numel(), dtype=torch.bool)
    chosen[hidden.relu().flatten().topk(settings.k * len(hidden), sorted=False).indices] = True
    chosen = chosen.view_as(hidden)  # [batch, d_sae]
    cols = hidden.masked_fill(~chosen, -torch.inf).topk(int(chosen.sum(-1).max()), dim=-1, sorted=False).indices
    return cols, chosen.gather(-1, cols).float()


def _aux_loss(p: _Params, centred: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor,
              aux_k: int) -> torch.Tensor:
    """SAELens' calculate_topk_aux_loss without its b_dec: the top aux_k dead latents' pre-activations
    (over the dead latents only) decode the residual error [batch, d_in]."""
    dead_ids = dead.nonzero().squeeze(1)  # [n_dead]
    hidden = centred @ p.enc[dead_ids].T + p.b_enc[dead_ids]  # [batch, n_dead]
    top = hidden.topk(min(aux_k, len(dead_ids)), dim=-1, sorted=False)
    kept = torch.zeros_like(hidden).scatter(-1, top.indices, top.values.relu())
    error_hat = kept @ p.W_dec[dead_ids]  # [batch, d_in]
    return min(len(dead_ids) / aux_k, 1.0) * (error_hat - residual).pow(2).sum(-1).mean()


def _step(p: _Params, x: torch.Tensor, settings: TrainSettings, dead: torch.Tensor, aux_k: int):
    """(loss, fvu, aux loss, fired [d_sae] bool, smallest kept activation) on one batch x [batch, d_in]."""
    centred = x - p.b_dec  # [batch, d_in]
    with torch.no_grad():
        cols, keep = _select(torch.addmm(p.b_enc, centred, p.enc.T), settings)  # the dense product, no graph
    rows = F.embedding(cols, p.enc)  # [batch, kept, d_in] the kept latents' encoder rows
    values = ((rows * centred[:, None, :]).sum(-1) + p.b_enc[cols]).relu() * keep  # [batch, kept]
    x_hat = F.embedding_bag(cols, p.W_dec, per_sample_weights=values, mode="sum") + p.b_dec  # [batch, d_in]
    mse = (x - x_hat).pow(2).sum(-1).mean()
    aux = _aux_loss(p, centred, (x - x_hat).detach(), dead, aux_k) if dead.any() else torch.zeros(())
    active = values.detach() > 0
    fired = torch.zeros(len(dead), dtype=torch.bool)
    fired[cols[active]] = True
    variance = (x - x.mean(0)).pow(2).sum(-1).mean()
    smallest = float(values.detach()[active].min()) if bool(active.any()) else 0.0
    return mse + settings.aux_coefficient * aux, float(mse.detach() / variance), float(aux.detach()), fired, smallest


def _learning_rate(step: int, settings: TrainSettings) -> float:
    """Linear warm-up, constant, linear decay to zero (SAELens' schedule with lr_warm_up and lr_decay steps)."""
    steps = settings.steps
    warmup, decay = max(1, round(settings.warmup_fraction * steps)), round(settings.decay_fraction * steps)
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    if decay and step >= steps - decay:
        return settings.lr * (steps - step) / decay
    return settings.lr


def train(bundle: ModelBundle, id_batches: Iterable[torch.Tensor], settings: TrainSettings,
          progress: Progress | None = None) -> Training:
    """Train an SAE on `settings.hook_name` over `id_batches` (token ids [batch, pos], drawn until
    `settings.tokens` activations were used, fewer if they run out). Seeded: the same batches and settings give
    the same SAE. The model is never given gradients."""
    d_in = activation_width(bundle, settings.hook_name)
    generator = torch.Generator().manual_seed(settings.seed + 1)  # the mixing buffer's shuffles
    stream = activation_batches(bundle, settings.hook_name, id_batches, settings.batch_tokens,
                                settings.buffer_tokens, generator)
    started = time.perf_counter()
    first = next(stream, None)
    if first is None:
        raise UserInputError(f"The text gives fewer than {settings.buffer_tokens:,} tokens; give more text.")
    if first.shape[1] != d_in:
        raise RuntimeError(f"{settings.hook_name} recorded {first.shape[1]} wide, measured {d_in} wide")
    return fit(_chain(first, stream), settings, progress, started)


def fit(batches: Iterable[torch.Tensor], settings: TrainSettings, progress: Progress | None = None,
        started: float | None = None) -> Training:
    """Train an SAE on activation batches [batch_tokens, d_in] (the first one also sets the scale and b_dec);
    `train` streams them from the model, a caller may pass stored ones. `started`: when the clock started
    (perf_counter; default now)."""
    started = time.perf_counter() if started is None else started
    generator = torch.Generator().manual_seed(settings.seed)  # the initial decoder
    batches = iter(batches)
    first = next(batches)
    scale = math.sqrt(first.shape[1]) / float(first.norm(dim=-1).mean())  # mean norm sqrt(d_in) while training
    aux_k = settings.aux_k or max(1, first.shape[1] // 2)
    p = _Params.initial(first * scale, settings.d_sae, generator)
    optimiser = torch.optim.Adam(p.all(), lr=settings.lr)
    since_fired = torch.zeros(settings.d_sae, dtype=torch.long)  # tokens since each latent last fired
    threshold, fvu, aux_losses, dead_fractions, tokens = 0.0, [], [], [], 0
    for step, x in enumerate(_chain(first, batches)):
        if step >= settings.steps:
            break
        for group in optimiser.param_groups:
            group["lr"] = _learning_rate(step, settings)
        dead = since_fired >= settings.dead_tokens
        loss, step_fvu, aux, fired, smallest = _step(p, x * scale, settings, dead, aux_k)
        _update(p, optimiser, loss)
        since_fired = torch.where(fired, 0, since_fired + len(x))
        rate = 1.0 if step == 0 else settings.threshold_lr  # BatchTopK's threshold: a running mean
        threshold = (1 - rate) * threshold + rate * smallest
        tokens += len(x)
        fvu.append(step_fvu)
        aux_losses.append(aux)
        dead_fractions.append(float(dead.float().mean()))
        if progress:
            progress((step + 1) / settings.steps, f"Training the SAE: step {step + 1} of {settings.steps}, "
                                                  f"explained variance {1 - step_fvu:.3f}")
    return Training(_folded(p, scale, threshold, settings), tuple(fvu), tuple(aux_losses), tuple(dead_fractions),
                    tokens, time.perf_counter() - started, settings)


def _update(p: _Params, optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One Adam step with the decoder rows kept at unit norm (SAELens' remove_gradient_parallel_to_decoder_directions
    before the step, set_decoder_norm_to_unit_norm after it)."""
    loss.backward()
    with torch.no_grad():
        p.W_dec.grad -= (p.W_dec.grad * p.W_dec).sum(-1, keepdim=True) * p.W_dec
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        p.W_dec /= p.W_dec.norm(dim=-1, keepdim=True)


def _chain(first: torch.Tensor, rest: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    yield first
    yield from rest


def _folded(p: _Params, scale: float, threshold: float, settings: TrainSettings) -> SAE:
    """The SAE on unscaled activations: TopK, ReLU and JumpReLU commute with a positive scale, so dividing b_dec,
    b_enc and the threshold by it gives latents 1/scale of the trained ones and the same unit decoder rows."""
    weights = {"W_enc": p.enc.detach().T.contiguous(), "b_enc": p.b_enc.detach() / scale,
               "W_dec": p.W_dec.detach().clone(), "b_dec": p.b_dec.detach() / scale}
    meta = {"trained_by": "interp_core.features.train", "training_architecture": "batchtopk" if settings.batch_topk
            else "topk", "k": settings.k, "training_tokens": settings.tokens}
    if settings.batch_topk:
        return SAE(**weights, architecture="jumprelu", hook_name=settings.hook_name,
                   threshold=torch.full((settings.d_sae,), threshold / scale), metadata=meta)
    return SAE(**weights, architecture="topk", hook_name=settings.hook_name, k=settings.k, metadata=meta)
