"""Probes: the logistic-regression and MLP probes, the folds grouped by sentence, and the control task.

    >>> folds = probe_folds(data.labels, data.sentence_ids, n_folds=5)   # [(train, test)] example indexes
    >>> control = control_task_labels(data, seed=0)                      # [example] Hewitt & Liang labels
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from interp_core.errors import UserInputError
from interp_core.probing.examples import ProbeDataError, ProbeDataset

DEFAULT_FOLDS = 5  # each test fold holds 20% of the sentences; five scores give a usable std
CONTROL_DRAWS = 100  # redraws allowed until the control labels hold at least two classes
# Why a report has no control task: one sentence each, shown on the page in place of the selectivity chart.
NO_CONTROL_SWITCHED_OFF = "No control task: it was switched off (ProbeConfig(control=False))."
NO_CONTROL_WITHOUT_WORD_TYPES = (
    "No control task and no selectivity: this data gives one label per sentence and no word_type column, and "
    "with folds grouped by sentence a random label per text is never seen in training, so the control would sit "
    "at chance by construction (add a word_type column, such as the word that carries the label, to get one).")
NO_CONTROL_TOO_FEW_TYPES = ("No control task: the data has too few word types for random labels per type "
                            "(Hewitt & Liang) to hold two classes.")


@dataclass(frozen=True)
class ProbeConfig:
    """How the probes are trained and scored."""

    n_folds: int = DEFAULT_FOLDS  # each test fold holds 1/n_folds of the sentences
    # Inverse L2 strength on standardised features. Simpler probes are more selective (Hewitt & Liang): on the
    # organism, C=0.01 keeps task accuracy within ~0.01 of sklearn's C=1 while control accuracy falls by 0.05-0.15.
    C: float = 0.01
    max_iter: int = 500  # lbfgs converges well before this on a few thousand standardised rows
    seed: int = 0  # fold shuffling and the control labels
    control: bool = True  # also train on the control task (Hewitt & Liang)
    mlp: bool = False  # also train a small MLP probe, for comparison (slower; sklearn's MLP has no class weights)
    mlp_hidden: int = 64  # one hidden layer: enough to show what a nonlinear probe adds

    def __post_init__(self) -> None:
        if not 2 <= self.n_folds <= 20:
            raise UserInputError(f"The number of folds must be from 2 to 20 (got {self.n_folds}).")


def probe_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int = DEFAULT_FOLDS,
                seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) example indexes of each fold: StratifiedGroupKFold, so every group (sentence) is in the test
    part of exactly one fold and never in a fold's train and test parts at once, with class shares kept as
    even as the groups allow. Raises ProbeDataError when there are fewer groups than folds."""
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise ProbeDataError(f"The data has {n_groups} distinct sentences; {n_folds}-fold cross-validation "
                             f"grouped by sentence needs at least {n_folds}.")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only k members"
        folds = list(splitter.split(np.zeros(len(labels)), labels, groups))
    if any(len(test) == 0 for _, test in folds):
        raise ProbeDataError(f"{n_folds}-fold cross-validation left a fold without examples; use fewer folds.")
    return folds


def control_task_labels(dataset: ProbeDataset, seed: int = 0) -> np.ndarray | None:
    """Hewitt & Liang control labels: [example] int (class index). Every word type (sorted) draws one label from
    the task's label distribution with `seed`; all examples of a type share it. Redrawn (up to CONTROL_DRAWS
    times) until two classes occur. None when an example has no word type (a sentence-level upload without a
    word_type column), when the dataset has a single word type, or when no draw held two classes."""
    if any(e.word_type is None for e in dataset.examples):
        return None
    types = sorted({e.word_type for e in dataset.examples})
    if len(types) < 2:
        return None
    labels = dataset.labels
    share = np.bincount(labels, minlength=len(dataset.classes)) / len(labels)  # [class]
    position = {t: i for i, t in enumerate(types)}
    type_index = np.array([position[e.word_type] for e in dataset.examples])  # [example]
    rng = np.random.default_rng(seed)
    for _ in range(CONTROL_DRAWS):
        per_type = rng.choice(len(share), size=len(types), p=share)  # [type]
        control = per_type[type_index]  # [example]
        if len(np.unique(control)) >= 2:
            return control.astype(np.int64)
    return None


def no_control_reason(dataset: ProbeDataset, config: ProbeConfig) -> str:
    """Why `dataset` under `config` gets no control task (for a report whose control_task_labels are None), in
    one sentence for the page."""
    if not config.control:
        return NO_CONTROL_SWITCHED_OFF
    if any(e.word_type is None for e in dataset.examples):
        return NO_CONTROL_WITHOUT_WORD_TYPES
    return NO_CONTROL_TOO_FEW_TYPES


def linear_probe(config: ProbeConfig) -> Pipeline:
    """StandardScaler -> LogisticRegression(C=config.C, class_weight="balanced"): the probe of every layer."""
    return Pipeline([("scale", StandardScaler()),
                     ("probe", LogisticRegression(C=config.C, class_weight="balanced", max_iter=config.max_iter))])


def mlp_probe(config: ProbeConfig) -> Pipeline:
    """StandardScaler -> MLPClassifier with one hidden layer of config.mlp_hidden units (no class weights)."""
    return Pipeline([("scale", StandardScaler()),
                     ("probe", MLPClassifier(hidden_layer_sizes=(config.mlp_hidden,), max_iter=200,
                                             early_stopping=False, random_state=config.seed))])


def fit_predict(make: Callable[[], Pipeline], x_train: np.ndarray, y_train: np.ndarray,
                x_test: np.ndarray) -> np.ndarray:
    """Predictions for x_test of a probe fit on (x_train, y_train); a one-class train part predicts that class."""
    present = np.unique(y_train)
    if len(present) == 1:  # possible for the control labels of a small dataset
        return np.full(len(x_test), present[0])
    model = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    return model.predict(x_test)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """sklearn's balanced_accuracy_score (mean of per-class recall, 0..1), without its warning about predicted
    classes that y_true lacks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        return float(balanced_accuracy_score(y_true, y_pred))

