"""One headline number as the pages show it in a metric box (the arguments of st.metric), made by the analyses
that own the number: probing's summary, the attribution checks, the circuits' loss and patching views.

    >>> Metric("Loss, second copy", "0.05 nats", delta="-7.05", delta_color="inverse")
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """label and formatted value; an optional change (delta) with its colouring, and a tooltip (help)."""

    label: str
    value: str
    delta: str | None = None
    help: str | None = None
    delta_color: str = "normal"  # "normal" (up is good), "inverse" (down is good), "off" (grey: describes the value)
    delta_arrow: str = "auto"
