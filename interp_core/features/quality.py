"""A shipped SAE's card.json (written by `python -m interp_core.organism.train_sae`) as headline numbers and as the
rows of its quality-against-sparsity chart."""

from __future__ import annotations

import pandas as pd

from interp_core.figures import Metric

SWEEP_METRICS = {"explained_variance": "explained variance", "loss_recovered": "loss recovered"}


def quality_metrics(card: dict) -> tuple[Metric, ...]:
    """Explained variance, loss recovered, L0 and dead latents over the card's held-out tokens."""
    held = card.get("held_out") or {}
    tokens = f"over {int(held.get('tokens', 0)):,} held-out tokens"
    return (Metric("Explained variance", f"{held.get('explained_variance', float('nan')):.4f}",
                   help="1 - ||x - x_hat||^2 / ||x - mean x||^2, " + tokens),
            Metric("Loss recovered", f"{held.get('loss_recovered', float('nan')):.4f}",
                   help="(CE with the activation zeroed - CE with the SAE's reconstruction) / (CE zeroed - CE "
                        "clean), " + tokens),
            Metric("L0", f"{held.get('l0', float('nan')):.1f}", help="Latents active per token"),
            Metric("Dead latents", f"{held.get('dead_fraction', float('nan')):.2%}",
                   help="Share of the latents that never fire " + tokens))


def quality_frame(card: dict) -> pd.DataFrame | None:
    """Rows k, l0, metric, value for each point of the card's k sweep; None when it has none."""
    points = (card.get("k_sweep") or {}).get("points") or []
    rows = [{"k": p["k"], "l0": p["l0"], "metric": label, "value": p[name]}
            for p in points for name, label in SWEEP_METRICS.items() if name in p]
    return pd.DataFrame(rows) if rows else None
