"""The per-layer probing report: cross-validated probes at every layer (`run_probes`), their scores against the
majority-class baseline and the control task, the per-layer table and the confusion matrix.

    >>> report = run_probes(feats, data)          # balanced accuracy per layer and fold, with controls
    >>> report.best_layer, report.layer_table()   # the layer that reads the label best; one row per layer
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.metrics import confusion_matrix

from interp_core.errors import UserInputError
from interp_core.probing.examples import ProbeDataError, ProbeDataset, Progress
from interp_core.probing.features import ProbeFeatures, with_token_types
from interp_core.probing.probes import (
    ProbeConfig,
    balanced_accuracy,
    control_task_labels,
    fit_predict,
    linear_probe,
    mlp_probe,
    no_control_reason,
    probe_folds,
)


@dataclass(frozen=True, eq=False)
class ProbeReport:
    """Cross-validated probes at every layer: balanced accuracy per layer and fold, with controls."""

    dataset_name: str
    token: str  # which token the features were read at
    classes: tuple[str, ...]  # [class]
    labels: np.ndarray  # [example] int: the true class index
    sentence_ids: np.ndarray  # [example] int: the grouping of the folds
    test_fold: np.ndarray  # [example] int: the fold whose test part held the example
    task_scores: np.ndarray  # [layer + 1, fold] balanced accuracy of the linear probe on held-out sentences
    predictions: np.ndarray  # [layer + 1, example] int: out-of-fold predicted class of the linear probe
    baseline_scores: np.ndarray  # [fold] balanced accuracy of predicting the train part's majority class
    control_scores: np.ndarray | None  # [layer + 1, fold] the same probe on the control labels
    control_labels: np.ndarray | None  # [example] int: the control task's class index
    mlp_scores: np.ndarray | None  # [layer + 1, fold] a small MLP probe (optional)
    config: ProbeConfig = field(default_factory=ProbeConfig)
    no_control_reason: str | None = None  # one sentence: why control_scores is None (None when there is a control)

    def __post_init__(self) -> None:
        n_layers1, n_folds = self.task_scores.shape
        n = len(self.labels)
        expected = {"labels": (n,), "sentence_ids": (n,), "test_fold": (n,), "predictions": (n_layers1, n),
                    "baseline_scores": (n_folds,), "control_scores": (n_layers1, n_folds),
                    "control_labels": (n,), "mlp_scores": (n_layers1, n_folds)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"ProbeReport.{name} has shape {tuple(value.shape)}, expected {shape}")
        if n_folds != self.config.n_folds:
            raise ValueError(f"{n_folds} folds of scores, but the config says {self.config.n_folds}")
        if (self.control_scores is None) != (self.no_control_reason is not None):
            raise ValueError("a ProbeReport gives no_control_reason exactly when it has no control_scores")

    @property
    def n_layers(self) -> int:
        """Blocks of the model; scores cover layers 0..n_layers."""
        return self.task_scores.shape[0] - 1

    @property
    def layers(self) -> np.ndarray:
        return np.arange(self.n_layers + 1)

    @property
    def task_mean(self) -> np.ndarray:
        """[layer + 1] mean balanced accuracy over folds."""
        return self.task_scores.mean(axis=1)

    @property
    def task_std(self) -> np.ndarray:
        """[layer + 1] standard deviation over folds (ddof=0, as sklearn's cross_val_score users report)."""
        return self.task_scores.std(axis=1)

    @property
    def baseline(self) -> float:
        """Majority-class baseline, balanced accuracy (1 / n_classes when every test fold holds every class)."""
        return float(self.baseline_scores.mean())

    @property
    def majority_share(self) -> float:
        """Share of the most common class: the plain accuracy of always guessing it."""
        return float(np.bincount(self.labels).max() / len(self.labels))

    @property
    def control_mean(self) -> np.ndarray | None:
        return None if self.control_scores is None else self.control_scores.mean(axis=1)

    @property
    def selectivity(self) -> np.ndarray | None:
        """[layer + 1] task - control mean balanced accuracy (Hewitt & Liang 2019); None without a control task."""
        return None if self.control_scores is None else self.task_mean - self.control_mean

    @property
    def best_layer(self) -> int:
        """The layer with the highest mean task accuracy (the earliest one on ties)."""
        return int(np.argmax(self.task_mean))

    @property
    def first_good_layer(self) -> int:
        """The first layer that reaches 95% of the best layer's gain over the baseline (mean accuracies): where
        the information has (nearly) all appeared."""
        best = self.task_mean[self.best_layer]
        threshold = self.baseline + 0.95 * (best - self.baseline)
        return int(np.flatnonzero(self.task_mean >= threshold - 1e-12)[0])

    def layer_table(self) -> pd.DataFrame:
        """One row per layer: task, control and MLP accuracy (mean, std), selectivity and the baseline."""
        table = pd.DataFrame({
            "layer": self.layers,
            "reads": [resid_stage(layer, self.n_layers) for layer in self.layers],
            "task_mean": self.task_mean, "task_std": self.task_std,
        })
        if self.control_scores is not None:
            table["control_mean"] = self.control_mean
            table["control_std"] = self.control_scores.std(axis=1)
            table["selectivity"] = self.selectivity
        if self.mlp_scores is not None:
            table["mlp_mean"] = self.mlp_scores.mean(axis=1)
            table["mlp_std"] = self.mlp_scores.std(axis=1)
        table["baseline"] = self.baseline
        return table

    def to_frame(self) -> pd.DataFrame:
        """Tidy: one row per (layer, probe) with the balanced accuracy mean, std, low/high (mean -/+ std).

        probe is "task" (linear), "control" (linear on control labels), "mlp", or "majority baseline".
        """
        rows = []
        series = [("task", self.task_scores), ("control", self.control_scores), ("mlp", self.mlp_scores)]
        for probe, scores in series:
            if scores is None:
                continue
            for layer in self.layers:
                mean, std = float(scores[layer].mean()), float(scores[layer].std())
                rows.append({"layer": int(layer), "reads": resid_stage(int(layer), self.n_layers),
                             "probe": probe, "balanced_accuracy": mean, "std": std,
                             "low": mean - std, "high": mean + std})
        for layer in self.layers:
            rows.append({"layer": int(layer), "reads": resid_stage(int(layer), self.n_layers),
                         "probe": "majority baseline", "balanced_accuracy": self.baseline,
                         "std": float(self.baseline_scores.std()), "low": self.baseline, "high": self.baseline})
        return pd.DataFrame(rows)

    def confusion(self, layer: int) -> np.ndarray:
        """[true class, predicted class] counts of the out-of-fold predictions at `layer`."""
        if not 0 <= layer <= self.n_layers:
            raise UserInputError(f"Layer {layer} is out of range: choose 0 to {self.n_layers}.")
        return confusion_matrix(self.labels, self.predictions[layer], labels=np.arange(len(self.classes)))

    def confusion_frame(self, layer: int) -> pd.DataFrame:
        """Tidy confusion matrix at `layer`: true, predicted, count, share of the true class (row-normalised)."""
        matrix = self.confusion(layer)
        totals = matrix.sum(axis=1, keepdims=True)
        share = matrix / np.maximum(totals, 1)
        return pd.DataFrame([{"layer": layer, "true": t, "predicted": p, "count": int(matrix[i, j]),
                              "share": float(share[i, j])}
                             for i, t in enumerate(self.classes) for j, p in enumerate(self.classes)])


def resid_stage(layer: int, n_layers: int) -> str:
    """What residual-stream layer `layer` is, in words: "embeddings", "after block 2", ..."""
    if layer == 0:
        return "embeddings"
    if layer == n_layers:
        return f"after block {layer - 1} (last, before the final norm)"
    return f"after block {layer - 1}"


def run_probes(features: ProbeFeatures, dataset: ProbeDataset, config: ProbeConfig | None = None,
               progress: Progress | None = None) -> ProbeReport:
    """Train and cross-validate a probe at every layer (and the control task, and optionally an MLP probe).

    The folds come from `probe_folds` (grouped by sentence), fixed once and shared by every layer and every
    probe, so task, control and baseline are scored on exactly the same held-out sentences. Returns a
    ProbeReport; `progress(fraction, message)` is called after every layer and fold. Without a control task
    (switched off in `config`, or examples without a word type: a sentence-level upload with no word_type
    column) the report's control_scores and selectivity are None and its no_control_reason says why.
    """
    config = config or ProbeConfig()
    if features.fingerprint != dataset.fingerprint or features.resid.shape[1] != len(dataset):
        raise ValueError("the features were extracted from another dataset")
    dataset = with_token_types(dataset, features)
    labels, groups = dataset.labels, dataset.sentence_ids  # [example], [example]
    if len(dataset.classes) < 2:
        raise ProbeDataError("The data has a single class; a probe needs at least two.")
    folds = probe_folds(labels, groups, config.n_folds, config.seed)
    control = control_task_labels(dataset, config.seed) if config.control else None

    n_layers1 = features.resid.shape[0]
    test_fold = np.full(len(labels), -1, dtype=np.int64)
    for f, (_, test) in enumerate(folds):
        test_fold[test] = f
    baseline = np.array([balanced_accuracy(labels[test], DummyClassifier(strategy="most_frequent")
                                .fit(np.zeros((len(train), 1)), labels[train]).predict(np.zeros((len(test), 1))))
                         for train, test in folds])
    task = np.zeros((n_layers1, config.n_folds))
    ctrl = np.zeros((n_layers1, config.n_folds)) if control is not None else None
    mlp = np.zeros((n_layers1, config.n_folds)) if config.mlp else None
    predictions = np.zeros((n_layers1, len(labels)), dtype=np.int64)
    steps, step = n_layers1 * config.n_folds, 0
    for layer in range(n_layers1):
        x = features.resid[layer]  # [example, d_model]
        for f, (train, test) in enumerate(folds):
            pred = fit_predict(lambda: linear_probe(config), x[train], labels[train], x[test])
            predictions[layer, test] = pred
            task[layer, f] = balanced_accuracy(labels[test], pred)
            if ctrl is not None:
                pred_c = fit_predict(lambda: linear_probe(config), x[train], control[train], x[test])
                ctrl[layer, f] = balanced_accuracy(control[test], pred_c)
            if mlp is not None:
                pred_m = fit_predict(lambda: mlp_probe(config), x[train], labels[train], x[test])
                mlp[layer, f] = balanced_accuracy(labels[test], pred_m)
            step += 1
            if progress is not None:
                progress(step / steps, f"Training probes: layer {layer} of {n_layers1 - 1}, fold {f + 1} of "
                                       f"{config.n_folds}")
    reason = None if ctrl is not None else no_control_reason(dataset, config)
    return ProbeReport(dataset_name=dataset.name, token=features.token, classes=dataset.classes, labels=labels,
                       sentence_ids=groups, test_fold=test_fold, task_scores=task, predictions=predictions,
                       baseline_scores=baseline, control_scores=ctrl, control_labels=control, mlp_scores=mlp,
                       config=config, no_control_reason=reason)
