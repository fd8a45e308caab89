"""A trained probe's weights: the linear probe fit on every example at one layer, as plain arrays for download
(.npz without pickle, or a tidy CSV).

    >>> weights = fit_probe(feats, data, layer=2)   # ProbeWeights: coef [class or 1, d_model], ...
    >>> weights.to_npz()                             # bytes; np.load(f, allow_pickle=False)
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from interp_core.errors import UserInputError
from interp_core.probing.examples import ProbeDataset
from interp_core.probing.features import ProbeFeatures
from interp_core.probing.probes import ProbeConfig, balanced_accuracy, linear_probe

NPZ_HELP = ("numpy arrays, no pickle: np.load(f, allow_pickle=False). coef_raw and intercept_raw apply to the raw "
            "residual stream; coef, intercept, mean and scale to the standardised one.")  # the download's help

@dataclass(frozen=True, eq=False)
class ProbeWeights:
    """A linear probe trained on ALL examples at one layer, as plain arrays (for download, no pickle).

    Score of class k for a residual vector x [d_model]: ((x - mean) / scale) @ coef[k] + intercept[k], or
    equivalently x @ coef_raw[k] + intercept_raw[k]. With two classes there is one row: positive favours
    classes[1] (sklearn's convention).
    """

    layer: int
    classes: tuple[str, ...]  # [class]
    coef: np.ndarray  # [class or 1, d_model] on standardised features
    intercept: np.ndarray  # [class or 1]
    mean: np.ndarray  # [d_model] the scaler's mean
    scale: np.ndarray  # [d_model] the scaler's standard deviation
    train_accuracy: float  # balanced accuracy on the examples it was trained on (optimistic by construction)

    def __post_init__(self) -> None:
        rows = 1 if len(self.classes) == 2 else len(self.classes)
        d_model = self.mean.shape[0]
        for name, shape in {"coef": (rows, d_model), "intercept": (rows,), "scale": (d_model,)}.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"ProbeWeights.{name} has shape {getattr(self, name).shape}, expected {shape}")

    @property
    def coef_raw(self) -> np.ndarray:
        """[class or 1, d_model] weights on the raw residual stream (the scaler folded in)."""
        return self.coef / self.scale

    @property
    def intercept_raw(self) -> np.ndarray:
        """[class or 1] intercept on the raw residual stream."""
        return self.intercept - (self.coef * self.mean / self.scale).sum(axis=1)

    def to_npz(self) -> bytes:
        """The arrays as an .npz file (numpy's zip of .npy files; load with np.load(f, allow_pickle=False))."""
        buffer = io.BytesIO()
        np.savez(buffer, coef=self.coef, intercept=self.intercept, mean=self.mean, scale=self.scale,
                 coef_raw=self.coef_raw, intercept_raw=self.intercept_raw,
                 classes=np.array(self.classes, dtype=np.str_), layer=np.array(self.layer))
        return buffer.getvalue()

    def to_frame(self) -> pd.DataFrame:
        """Tidy raw-space weights: one row per (row of coef, d_model index) with the class it favours."""
        names = [self.classes[1]] if len(self.classes) == 2 else list(self.classes)
        return pd.DataFrame([{"layer": self.layer, "class": names[k], "dim": d, "weight": float(w)}
                             for k in range(len(names)) for d, w in enumerate(self.coef_raw[k])])


def fit_probe(features: ProbeFeatures, dataset: ProbeDataset, layer: int,
              config: ProbeConfig | None = None) -> ProbeWeights:
    """The linear probe of `run_probes` trained on every example at `layer` (for download and reuse)."""
    config = config or ProbeConfig()
    if not 0 <= layer <= features.n_layers:
        raise UserInputError(f"Layer {layer} is out of range: choose 0 to {features.n_layers}.")
    x, y = features.resid[layer], dataset.labels  # [example, d_model], [example]
    model = linear_probe(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    scaler, probe = model.named_steps["scale"], model.named_steps["probe"]
    return ProbeWeights(layer=layer, classes=dataset.classes, coef=probe.coef_.astype(np.float64),
                        intercept=probe.intercept_.astype(np.float64), mean=scaler.mean_.astype(np.float64),
                        scale=scaler.scale_.astype(np.float64), train_accuracy=balanced_accuracy(y, model.predict(x)))
