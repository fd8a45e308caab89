"""The tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the Tuned Lens"; the
tuned-lens library's `tuned_lens/nn/lenses.py`): one affine translator per residual row but the last,

    logits_l = unembed(final_norm(h + h A_l^T + b_l))      the norm's statistics recomputed, as the logit lens

A_l and b_l start at zero, so the untrained tuned lens is the logit lens, and are trained to minimise KL(p_final ||
p_lens) at every position (`train`). The layout is the library's: translator l reads residual row l (0 = the
embeddings, row l = the output of block l-1) as a torch Linear (weight [d_model, d_model], out = h @ weight.T +
bias); the last row is the model's own output and has no translator.

    >>> training = train(bundle, text_batches(bundle, text, seq_len=64, batch_size=8), steps=200)
    >>> save(training.lens, folder); load(bundle, folder)        # lens.safetensors + config.json
    >>> load(bundle, library_folder)                             # the library's config.json + params.pt
    >>> layer_divergence(bundle, batches, training.lens)         # [layer + 1] mean KL(final || lens), nats
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch

from interp_core import activations
from interp_core.components import resid_to_logits
from interp_core.errors import UserInputError
from interp_core.loading import ModelBundle

Progress = Callable[[float, str], None]
OURS = "lens.safetensors"  # our format: the translators as safetensors, beside config.json
LIBRARY = "params.pt"  # the tuned-lens library's: a state dict of its translators ("{l}.weight", "{l}.bias")
FORMAT = "interp-workbench tuned lens 1"


class LensFileError(UserInputError):
    """A tuned-lens folder that cannot be read, or that does not fit the model."""


@dataclass(frozen=True, eq=False)
class TunedLens:
    """Translators for residual rows 0 .. n_layers - 1 (see the module docstring)."""

    weight: torch.Tensor  # [n_layers, d_model, d_model] A_l in torch Linear layout
    bias: torch.Tensor  # [n_layers, d_model]
    origin: str  # where it came from, in words

    def __post_init__(self) -> None:
        n, d = self.bias.shape
        if tuple(self.weight.shape) != (n, d, d):
            raise ValueError(f"TunedLens.weight is {tuple(self.weight.shape)}, expected {(n, d, d)}")

    @property
    def n_layers(self) -> int:
        return self.bias.shape[0]

    @cached_property
    def digest(self) -> str:
        """A fingerprint of the translators (results computed with this lens are cached under it)."""
        data = torch.cat([self.weight.flatten(), self.bias.flatten()]).float().numpy().tobytes()
        return hashlib.sha256(data).hexdigest()[:16]

    def translate(self, resid: torch.Tensor, row: int) -> torch.Tensor:
        """Residual row `row` [..., d_model] translated (the last row, the model's output, as it is)."""
        if row >= self.n_layers:
            return resid
        weight, bias = self.weight[row].to(resid.dtype), self.bias[row].to(resid.dtype)
        return resid + resid @ weight.T + bias


def zero_lens(bundle: ModelBundle, origin: str = "untrained: the logit lens") -> TunedLens:
    n, d = bundle.n_layers, bundle.d_model
    return TunedLens(torch.zeros(n, d, d), torch.zeros(n, d), origin)


def text_batches(bundle: ModelBundle, text: str, seq_len: int, batch_size: int) -> list[torch.Tensor]:
    """`text` tokenised and cut into [batch_size, seq_len] batches of token ids (the last, partial one dropped)."""
    ids = torch.tensor(bundle.tokenizer(text)["input_ids"], dtype=torch.long)
    rows = ids[:len(ids) // seq_len * seq_len].view(-1, seq_len)
    return [rows[i:i + batch_size] for i in range(0, len(rows) - batch_size + 1, batch_size)]


def _residuals(bundle: ModelBundle, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([layer + 1, batch, pos, d_model] every residual row, [batch, pos, d_vocab] the model's log-probs)."""
    n = bundle.n_layers
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    with torch.no_grad():
        run = activations.run(bundle, ids.to(bundle.device), record=names, logits_to_keep=0, fused_attention=True)
    return torch.stack([run.acts[name] for name in names]).float(), torch.log_softmax(run.logits.float(), -1)


def _kl(final_logp: torch.Tensor, final_p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """[...] KL(p_final || softmax(logits)) in nats, for the final log-probs and probabilities (computed once for
    every row) and logits [..., d_vocab]."""
    return (final_p * (final_logp - torch.log_softmax(logits.float(), -1))).sum(-1)


@dataclass(frozen=True, eq=False)
class Training:
    """A trained lens, its loss at every step (KL summed over the translated rows, mean over positions), the
    tokens it saw and how long it took."""

    lens: TunedLens
    losses: tuple[float, ...]
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def train(bundle: ModelBundle, batches: Iterable[torch.Tensor], steps: int, lr: float = 1.0,
          momentum: float = 0.9, weight_decay: float = 1e-3, clip: float = 1.0, seed: int = 0,
          progress: Progress | None = None) -> Training:
    """The paper's recipe (tuned-lens `scripts/train_loop.py`): SGD with Nesterov momentum, learning rate
    lr * (1 - momentum) decayed linearly to 0, weight decay, gradients clipped to norm `clip`; `batches` cycled.
    Only the translators are differentiated: the shared model's parameters are never given gradients."""
    batches = list(batches)
    if not batches or steps < 1:
        raise ValueError("Training a tuned lens needs at least one batch of text and one step")
    torch.manual_seed(seed)
    lens = zero_lens(bundle, "trained here")
    params = [lens.weight.requires_grad_(True), lens.bias.requires_grad_(True)]
    optimiser = torch.optim.SGD(params, lr=lr * (1 - momentum), momentum=momentum, nesterov=True,
                                weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1 - step / steps)
    losses, tokens, started = [], 0, time.perf_counter()
    for step in range(steps):
        ids = batches[step % len(batches)]
        resid, final_logp = _residuals(bundle, ids)
        final_p = final_logp.exp()
        loss = sum(_kl(final_logp, final_p, resid_to_logits(bundle, lens.translate(resid[row], row))).mean()
                   for row in range(lens.n_layers))
        grads = torch.autograd.grad(loss, params)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        tokens += ids.numel()
        if progress:
            progress((step + 1) / steps, f"Training the tuned lens: step {step + 1} of {steps}, KL {losses[-1]:.3f}")
    trained = TunedLens(lens.weight.detach(), lens.bias.detach(), "trained here")
    return Training(trained, tuple(losses), tokens, time.perf_counter() - started)


@dataclass(frozen=True, eq=False)
class Divergence:
    """Per residual row, over some text: the mean KL(final || lens) and the share of positions whose top-1 token
    is the model's, for the logit lens and the tuned lens."""

    layer_labels: list[str]  # [layer + 1]
    logit_kl: torch.Tensor  # [layer + 1]
    tuned_kl: torch.Tensor
    logit_agreement: torch.Tensor
    tuned_agreement: torch.Tensor
    text: str  # which text, in words

    @classmethod
    def of_prompt(cls, logit, tuned_lens) -> Divergence:
        """From the logit lens' and the tuned lens' LensResult of one prompt: the means over its positions."""
        final_top = logit.top_ids[-1, :, 0]

        def agreement(result) -> torch.Tensor:
            return (result.top_ids[:, :, 0] == final_top).float().mean(1)

        return cls(list(logit.layer_labels), logit.kl_to_final.mean(1), tuned_lens.kl_to_final.mean(1),
                   agreement(logit), agreement(tuned_lens), "this prompt")

    def to_frame(self) -> pd.DataFrame:
        """One row per (residual row, lens): layer, layer_label, lens, text, kl (nats), top1_agreement."""
        rows = []
        for lens, kl, agreement in (("logit lens", self.logit_kl, self.logit_agreement),
                                    ("tuned lens", self.tuned_kl, self.tuned_agreement)):
            rows += [{"layer": i, "layer_label": label, "lens": lens, "text": self.text, "kl": float(kl[i]),
                      "top1_agreement": float(agreement[i])} for i, label in enumerate(self.layer_labels)]
        return pd.DataFrame(rows)


def layer_divergence(bundle: ModelBundle, batches: Iterable[torch.Tensor], lens: TunedLens, text: str,
                     labels: list[str]) -> Divergence:
    """Both lenses' KL to the model's output and top-1 agreement with it, per row, averaged over `batches`."""
    rows = bundle.n_layers + 1
    sums, count = torch.zeros(4, rows), 0
    with torch.no_grad():
        for ids in batches:
            resid, final_logp = _residuals(bundle, ids)
            final_p, final_top = final_logp.exp(), final_logp.argmax(-1)
            for row in range(rows):
                for i, translated in enumerate((resid[row], lens.translate(resid[row], row))):
                    logits = resid_to_logits(bundle, translated)
                    sums[i, row] += float(_kl(final_logp, final_p, logits).clamp_min(0).sum())
                    sums[2 + i, row] += float((logits.argmax(-1) == final_top).sum())
            count += ids.numel()
    if count == 0:
        raise ValueError("No text to measure the lenses on")
    mean = sums / count
    return Divergence(labels, mean[0], mean[1], mean[2], mean[3], text)


# -- files ------------------------------------------------------------------------------------------------------


def save(lens: TunedLens, folder: Path | str, about: dict | None = None) -> None:
    """`lens` as lens.safetensors and config.json (the format, its sizes and `about`: how it was trained)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"weight": lens.weight.contiguous(), "bias": lens.bias.contiguous()}, str(folder / OURS))
    config = {"format": FORMAT, "d_model": lens.bias.shape[1], "num_hidden_layers": lens.n_layers, **(about or {})}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def load(bundle: ModelBundle, folder: Path | str) -> TunedLens:
    """A lens saved by `save`, or by the tuned-lens library (`config.json` + `params.pt`, read with
    torch.load(weights_only=True): plain tensors only), checked against `bundle`'s shape."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LensFileError(f"{folder} has no readable config.json ({exc}).") from exc
    if (folder / OURS).is_file():
        weight, bias = _read_ours(folder / OURS)
    elif (folder / LIBRARY).is_file():
        weight, bias = _read_library(folder / LIBRARY, int(config.get("num_hidden_layers", 0)),
                                     bool(config.get("bias", True)))
    else:
        raise LensFileError(f"{folder} has neither {OURS} nor the tuned-lens library's {LIBRARY}.")
    expected = (bundle.n_layers, bundle.d_model)
    if tuple(bias.shape) != expected or tuple(weight.shape) != (*expected, bundle.d_model):
        raise LensFileError(f"The lens in {folder} has {bias.shape[0]} translators of width {bias.shape[-1]}; "
                            f"this model needs {expected[0]} of width {expected[1]}.")
    return TunedLens(weight.float(), bias.float(), f"loaded from {folder}")


def _read_ours(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
        return tensors["weight"], tensors["bias"]
    except (SafetensorError, KeyError, OSError) as exc:
        raise LensFileError(f"{path} is not a tuned lens saved by the workbench ({exc}).") from exc


def _read_library(path: Path, n_layers: int, has_bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unpickler refusing anything but tensors raises many kinds
        raise LensFileError(f"{path} is not a file of plain tensors ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LensFileError(f"{path} does not hold a state dict of tensors.")
    expected = {f"{layer}.{part}" for layer in range(n_layers) for part in ("weight", "bias")[:1 + has_bias]}
    if n_layers < 1 or set(state) != expected:
        raise LensFileError(f"{path} holds {len(state)} tensors, not the weights{' and biases' if has_bias else ''} "
                            f"of the {n_layers} translators its config.json names.")
    try:
        weight = torch.stack([state[f"{layer}.weight"] for layer in range(n_layers)])
        bias = (torch.stack([state[f"{layer}.bias"] for layer in range(n_layers)]) if has_bias
                else torch.zeros(n_layers, weight.shape[1]))
    except RuntimeError as exc:
        raise LensFileError(f"{path}'s translators differ in shape ({exc}).") from exc
    return weight, bias
