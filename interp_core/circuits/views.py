"""What the Circuits page's detector and ablation tabs show besides charts, as plain values: the numbers it puts in
st.metric boxes and the sentences that say how to read them (no Streamlit here).

    >>> loss_metrics(run)                     # (Metric("Loss, first copy", "7.10 nats"), Metric(... second ...))
    >>> ablation_metrics(run, ablated)        # the second copy's loss, intact and ablated, and their ratio
"""

from __future__ import annotations

from interp_core.circuits.detectors import Head, head_label
from interp_core.circuits.repeated import RepeatedRun
from interp_core.figures import Metric
from interp_core.loading import ModelBundle

COPY_LOSS_NOTE = ("Random tokens cannot be predicted the first time; an induction head lets the model copy the "
                  "second time, so the second copy's loss falls far below the first. Induction needs a "
                  "previous-token head in an earlier layer, so layer 0 cannot hold an induction head.")


def loss_metrics(run: RepeatedRun) -> tuple[Metric, Metric]:
    """The mean loss on the first and on the second copy (nats); the second's change from the first, where a
    fall is good (induction)."""
    first, second = run.copy_loss(1), run.copy_loss(2)
    return (Metric("Loss, first copy", f"{first:.2f} nats"),
            Metric("Loss, second copy", f"{second:.2f} nats", delta=f"{second - first:+.2f}", delta_color="inverse"))


def ablation_metrics(intact: RepeatedRun, ablated: RepeatedRun) -> tuple[Metric, Metric]:
    """The second copy's mean loss (nats) intact and with the heads ablated, and how many times larger it got."""
    before, after = intact.copy_loss(2), ablated.copy_loss(2)
    return (Metric("Loss, second copy, intact", f"{before:.2f} nats"),
            Metric("Loss, second copy, ablated", f"{after:.2f} nats", delta=f"x{after / max(before, 1e-9):.1f}",
                   delta_color="off"))


def ablated_loss_note(ablated: RepeatedRun) -> str:
    """How to read the copy-loss chart of an intact run (solid) against `ablated` (dashed)."""
    return (f"Solid: the intact model. Dashed: {ablated.ablation_label}. If the dashed second copy rises, the "
            "ablated heads help copying.")


def head_choices(bundle: ModelBundle) -> dict[str, Head]:
    """Every head of the model by its label, {"L0H0": (0, 0), ...}, layer by layer."""
    return {head_label(layer, head): (layer, head)
            for layer in range(bundle.n_layers) for head in range(bundle.n_heads)}
