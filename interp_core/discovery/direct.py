"""Each graph node's direct effect on a task's metric: what its output at the last position adds to logit(answer) -
logit(foil) through the final norm (frozen at each run's own scale, as direct logit attribution does: lens/dla.py)
and the unembedding, averaged over the task's pairs, on the clean and on the corrupted prompts.

    >>> effects = direct_effects(bundle, graph, data)     # every sender at once, one pass per prompt batch
    >>> effects.clean[graph.senders.index(Node("mlp", 2))]

The senders' outputs leave out the attention output biases b_O (the same in every run), so the rest of the last
residual (`rest`: b_O of every layer) and the final norm's bias are terms of their own; with them the parts add up
to the model's logit difference exactly (tested). A node's direct effect is not its total effect: what it does
through later nodes is in the edge scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp_core.components import final_norm_form
from interp_core.discovery.graph import Graph
from interp_core.discovery.graph_run import sender_outputs_and_final
from interp_core.discovery.pairs import PairData
from interp_core.figures import Metric
from interp_core.lens.lens import decode_ids
from interp_core.loading import ModelBundle


@dataclass(frozen=True, eq=False)
class DirectEffects:
    """Mean direct effects on the logit difference, per sender [sender], on clean and corrupted prompts; `rest`
    (the biases b_O) and `norm_bias` (the final norm's bias and the unembedding's) per run kind; `metric` the
    mean logit difference itself (the sum of every part)."""

    graph: Graph
    clean: torch.Tensor  # [sender] float64
    corrupt: torch.Tensor  # [sender] float64
    rest: tuple[float, float]  # (clean, corrupt)
    norm_bias: tuple[float, float]
    metric: tuple[float, float]
    mean_clean_output: torch.Tensor  # [sender, d_model] each sender's last-position output through the frozen norm

    def __post_init__(self) -> None:
        n = len(self.graph.senders)
        for name in ("clean", "corrupt"):
            if tuple(getattr(self, name).shape) != (n,):
                raise ValueError(f"DirectEffects.{name} has shape {tuple(getattr(self, name).shape)}, expected {(n,)}")

    def of(self, node_name: str) -> tuple[float, float]:
        """(clean, corrupt) mean direct effect of the sender called `node_name` (EAP-IG's names: a1.h2, m0)."""
        i = [n.name for n in self.graph.senders].index(node_name)
        return float(self.clean[i]), float(self.corrupt[i])

    def to_frame(self) -> pd.DataFrame:
        """Rows: node, clean, corrupted, difference (clean - corrupted), in graph order."""
        return pd.DataFrame({"node": [n.name for n in self.graph.senders], "clean": self.clean.numpy(),
                             "corrupted": self.corrupt.numpy(), "difference": (self.clean - self.corrupt).numpy()})


def _parts(bundle: ModelBundle, graph: Graph, ids: torch.Tensor, direction: torch.Tensor, bias: torch.Tensor):
    """Per row of ids: ([sender, row] effects, [row] rest, [row] norm bias, [row] metric, [sender, row, d] normed)."""
    outputs, final = sender_outputs_and_final(bundle, graph, ids.to(bundle.device))
    outputs, final = outputs[:, :, -1].double().cpu(), final[:, -1].double().cpu()  # [sender, row, d], [row, d]
    form = final_norm_form(bundle)
    scale = form.scale(final).double()  # [row, 1]
    lin = lambda x: form.linear(x.double(), scale)  # noqa: E731 - the frozen norm of this batch
    normed = lin(outputs)
    effects = (normed * direction).sum(-1)
    rest = (lin(final - outputs.sum(0)) * direction).sum(-1)
    norm_bias = (form.bias.double() * direction).sum(-1) + bias
    metric = effects.sum(0) + rest + norm_bias
    return effects, rest, norm_bias, metric, normed


def direct_effects(bundle: ModelBundle, graph: Graph, data: PairData) -> DirectEffects:
    """Every sender's mean direct effect on logit(answer) - logit(foil) (see the module docstring)."""
    w_u = bundle.adapter.unembed_weight(bundle.model).detach().double().cpu()  # [d_vocab, d_model]
    b_u = bundle.adapter.unembed_bias(bundle.model)
    b_u = torch.zeros(w_u.shape[0], dtype=torch.float64) if b_u is None else b_u.detach().double().cpu()
    sums = {kind: [0.0, 0.0, 0.0, 0.0] for kind in ("clean", "corrupt")}  # effects, rest, norm bias, metric
    normed_sum = 0.0
    for batch in data.batches():
        direction = w_u[batch.answer] - w_u[batch.foil]  # [row, d_model]
        bias = b_u[batch.answer] - b_u[batch.foil]
        for kind in ("clean", "corrupt"):
            effects, rest, norm_bias, metric, normed = _parts(bundle, graph, getattr(batch, kind), direction, bias)
            for i, part in enumerate((effects.sum(1), rest.sum(), norm_bias.sum(), metric.sum())):
                sums[kind][i] = sums[kind][i] + part
            if kind == "clean":
                normed_sum = normed_sum + normed.sum(1)
    n = len(data)
    clean, corrupt = ([value / n for value in sums[kind]] for kind in ("clean", "corrupt"))
    return DirectEffects(graph=graph, clean=clean[0], corrupt=corrupt[0], rest=(float(clean[1]), float(corrupt[1])),
                         norm_bias=(float(clean[2]), float(corrupt[2])), metric=(float(clean[3]), float(corrupt[3])),
                         mean_clean_output=normed_sum / n)


@dataclass(frozen=True)
class PromotedTokens:
    """The tokens a node's mean clean output (through the frozen final norm) raises and lowers most, in logits."""

    node: str
    promoted: tuple[tuple[str, float], ...]
    suppressed: tuple[tuple[str, float], ...]

    def to_frame(self) -> pd.DataFrame:
        rows = [("promoted", t, v) for t, v in self.promoted] + [("suppressed", t, v) for t, v in self.suppressed]
        return pd.DataFrame(rows, columns=["direction", "token", "logit_effect"]).assign(node=self.node)


def promoted_tokens(bundle: ModelBundle, effects: DirectEffects, node_name: str, k: int = 8) -> PromotedTokens:
    """The `k` tokens `node_name`'s mean clean last-position output raises most and lowers most (direct effect)."""
    i = [n.name for n in effects.graph.senders].index(node_name)
    w_u = bundle.adapter.unembed_weight(bundle.model).detach().double().cpu()
    logits = w_u @ effects.mean_clean_output[i]  # [d_vocab]
    k = max(1, min(int(k), logits.shape[0]))
    up, down = logits.topk(k), (-logits).topk(k)
    names = decode_ids(bundle, torch.cat([up.indices, down.indices]))
    promoted = tuple((names[j], float(logits[j])) for j in up.indices.tolist())
    suppressed = tuple((names[j], float(logits[j])) for j in down.indices.tolist())
    return PromotedTokens(node_name, promoted, suppressed)


def node_effect_metrics(effects: DirectEffects, node_name: str) -> tuple[Metric, Metric, Metric]:
    """A node's direct effect on clean and corrupted prompts, and its difference's share of the metric's gap."""
    clean, corrupt = effects.of(node_name)
    gap = effects.metric[0] - effects.metric[1]
    share = (clean - corrupt) / gap if abs(gap) > 1e-9 else float("nan")
    return (Metric("Direct effect, clean", f"{clean:+.3f}", help="Mean over pairs of what its last-position output "
                   "adds to logit(answer) - logit(foil) through the frozen final norm and the unembedding"),
            Metric("Direct effect, corrupted", f"{corrupt:+.3f}"),
            Metric("Share of the clean - corrupted gap", f"{share:.1%}", help=f"(clean - corrupted) / "
                   f"{gap:.3f}, the gap of the mean logit difference; the rest goes through later nodes or others"))
