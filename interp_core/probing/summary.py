"""The Probing page's headline of a report as plain values: the metrics over the charts and the sentences beside
them (no Streamlit here; the page draws them).

    >>> summary = ProbeSummary.from_report(report)
    >>> [m.label for m in summary.metrics]   # best layer, its accuracy, selectivity (with a control), layer 0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from interp_core.figures import Metric
from interp_core.probing.report import ProbeReport, resid_stage


@dataclass(frozen=True)
class ProbeSummary:
    """What the page says about a ProbeReport above and beside its charts."""

    metrics: tuple[Metric, ...]  # best layer, accuracy there, [selectivity there, most selective layer], layer 0
    where: str  # Markdown: the layer that reads the label best, and the first one that nearly does
    baseline_note: str  # the majority-class baseline in words
    control_note: str | None  # one sentence: why there is no control task; None when there is one

    @classmethod
    def from_report(cls, report: ProbeReport) -> ProbeSummary:
        """The headline of `report`: selectivity metrics (Hewitt & Liang 2019) only when it has a control task."""
        best, n_layers = report.best_layer, report.n_layers
        metrics = [Metric("Best layer", str(best), help=resid_stage(best, n_layers)),
                   Metric("Balanced accuracy there", f"{report.task_mean[best]:.3f}",
                          delta=f"{report.task_mean[best] - report.baseline:+.3f} vs baseline")]
        if report.selectivity is not None:
            most = int(np.argmax(report.selectivity))
            metrics += [Metric("Selectivity there", f"{report.selectivity[best]:.3f}",
                               help="Task minus control-task balanced accuracy at the best layer (Hewitt & Liang "
                                    "2019)."),
                        Metric("Most selective layer", str(most), delta=f"selectivity {report.selectivity[most]:.3f}",
                               help=resid_stage(most, n_layers), delta_color="off", delta_arrow="off")]
        metrics.append(Metric("Layer 0 (embeddings)", f"{report.task_mean[0]:.3f}",
                              help="What the token embeddings alone give: information that appears later was "
                                   "computed."))
        first = report.first_good_layer
        if first < best:
            where = (f"Layer **{first}** ({resid_stage(first, n_layers)}) already has 95% of the best layer's gain "
                     f"over the baseline; the best is layer **{best}** ({resid_stage(best, n_layers)}).")
        else:
            where = f"The label is read best at layer **{best}** ({resid_stage(best, n_layers)})."
        if report.selectivity is not None:
            where += " Compare with the control task before concluding that a layer *represents* it."
        else:
            where += " Without a control task, accuracy alone does not show that a layer *represents* it."
        baseline_note = (f"Majority-class baseline: balanced accuracy {report.baseline:.2f} (always guessing the most "
                         f"common class, which is {report.majority_share:.0%} of the examples).")
        return cls(metrics=tuple(metrics), where=where, baseline_note=baseline_note,
                   control_note=report.no_control_reason)
