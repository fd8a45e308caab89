"""Probing: from which layer on a labelled property is linearly readable from the residual stream.

    >>> data = builtin_dataset("number")                       # subject number of 1,500 grammar sentences
    >>> feats = extract_features(bundle, data, token="last")   # resid [layer + 1, example, d_model]
    >>> report = run_probes(feats, data)                        # balanced accuracy per layer, with controls
    >>> report.best_layer, report.layer_table()

The recipe (Hewitt & Liang 2019, "Designing and Interpreting Probes with Control Tasks"; see
/work/shared/notes/algorithms.md):
1. Features: the residual stream at every layer l = 0..n_layers for one token of each example (the last
   token, the mean over the text's tokens, or the labelled word's last sub-token). resid[0] is the embedding,
   resid[l] the input of block l, resid[n_layers] the last block's output BEFORE the final norm.
2. Probe: StandardScaler -> LogisticRegression(class_weight="balanced"), cross-validated with k folds grouped by
   sentence (StratifiedGroupKFold), so no sentence is ever in both the train and the test part of a fold.
   Score: balanced accuracy (mean of per-class recall), mean +/- std over folds, next to the majority-class
   baseline scored the same way (which is 1 / n_classes under balanced accuracy).
3. Control task: every word TYPE gets one random label, drawn once from the task's label distribution with a
   fixed seed; the same probe on the same features and folds learns it. Selectivity = task - control accuracy.
   A probe that also does well on the control is memorising word identities, not reading the property.
   Data without word types (an uploaded sentence-level CSV with no word_type column) gets no control task:
   its text is what the folds group by, so random labels per text could never be learned.

Modules, by topic: `examples` (ProbeExample, ProbeDataset), `datasets` (the built-ins), `upload` (CSV
parsing and checks), `features` (the residual stream through the activation API), `probes` (the probes, folds
and control task), `report` (run_probes and the per-layer report), `weights` (a trained probe for download),
`summary` (the page's headline of a report). Dimension names: `example` is one labelled item (a sentence, or one
word of a sentence); the others follow docs/architecture.md (layer, pos, d_model, class).
"""

from interp_core.figures import Metric
from interp_core.probing.datasets import BUILTIN_DATASETS, GRAMMAR_FILE, builtin_dataset, grammar_records
from interp_core.probing.examples import LEVELS, TOKEN_CHOICES, ProbeDataError, ProbeDataset, ProbeExample
from interp_core.probing.features import ProbeFeatures, extract_features, with_token_types
from interp_core.probing.probes import (
    DEFAULT_FOLDS,
    NO_CONTROL_WITHOUT_WORD_TYPES,
    ProbeConfig,
    control_task_labels,
    probe_folds,
)
from interp_core.probing.report import ProbeReport, resid_stage, run_probes
from interp_core.probing.summary import ProbeSummary
from interp_core.probing.upload import CSV_EXAMPLE, UPLOAD_HELP, parse_probe_csv
from interp_core.probing.weights import NPZ_HELP, ProbeWeights, fit_probe

__all__ = [
    "BUILTIN_DATASETS", "CSV_EXAMPLE", "DEFAULT_FOLDS", "GRAMMAR_FILE", "LEVELS", "NO_CONTROL_WITHOUT_WORD_TYPES",
    "NPZ_HELP", "TOKEN_CHOICES", "UPLOAD_HELP",
    "Metric", "ProbeConfig", "ProbeDataError", "ProbeDataset", "ProbeExample", "ProbeFeatures", "ProbeReport",
    "ProbeSummary", "ProbeWeights", "builtin_dataset", "control_task_labels", "extract_features", "fit_probe",
    "grammar_records", "parse_probe_csv", "probe_folds", "resid_stage", "run_probes", "with_token_types",
]
