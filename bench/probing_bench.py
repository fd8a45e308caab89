"""Workload 5: probing - residual-stream features at every layer for 2,000 grammar sentences, then cross-validated
linear probes (task: subject number; Hewitt & Liang control task) at every layer.

Anchors, written as a competent notebook would:
- features: TransformerLens `run_with_cache` on right-padded batches of 32 sentences (causal attention: padding
  after a sentence does not change its real tokens), caching only the residual stream, read at each sentence's
  last real token;
- probes: a plain scikit-learn loop over layers and the same 5 folds (StratifiedGroupKFold grouped by sentence)
  with the same pipeline (StandardScaler -> LogisticRegression(class_weight="balanced", max_iter=500)), on the
  task and on the control labels.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench.common import Models, Plan, Row, time_pair
from interp_core.probing import (
    ProbeConfig,
    ProbeDataset,
    ProbeExample,
    control_task_labels,
    extract_features,
    grammar_records,
    run_probes,
)

WORKLOAD = "5. Probing"
HEAD_TAGS = ("NOUN", "PROPN", "PRON")  # the subject's head carries the number (as the built-in dataset)
BATCH = 32


def number_dataset(n_sentences: int) -> ProbeDataset:
    """Subject number (sg / pl) of the first `n_sentences` grammar sentences, read at the last token."""
    records = grammar_records()
    if len(records) < n_sentences:
        raise RuntimeError(f"only {len(records)} grammar sentences are available, {n_sentences} were asked for")
    examples = []
    for record in records[:n_sentences]:
        head = next(i for i, tag in enumerate(record["pos"]) if tag in HEAD_TAGS)
        examples.append(ProbeExample(text=record["text"], label=str(record["number"]),
                                     sentence_id=int(record["sentence_id"]), word_type=record["words"][head].lower()))
    return ProbeDataset(name=f"subject number, {n_sentences} sentences", level="sentence", examples=tuple(examples))


def tl_features(bridge, tokenizer, texts: list[str], n_layers: int) -> np.ndarray:
    """[layer + 1, example, d_model]: resid_pre of every block and the last block's resid_post at the last token."""
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    names.append(f"blocks.{n_layers - 1}.hook_resid_post")
    device = next(bridge.parameters()).device
    out = []
    for start in range(0, len(texts), BATCH):
        enc = tokenizer(texts[start: start + BATCH], padding=True, return_tensors="pt")  # right-padded
        last = enc["attention_mask"].sum(1) - 1  # [batch] index of each text's last real token
        with torch.no_grad():
            _, cache = bridge.run_with_cache(enc["input_ids"].to(device), names_filter=names)
        rows, last = torch.arange(len(last), device=device), last.to(device)
        out.append(torch.stack([cache[name][rows, last].float().cpu() for name in names]))
    return torch.cat(out, dim=1).numpy()  # [layer + 1, example, d_model]


def sklearn_probes(resid: np.ndarray, labels: np.ndarray, control: np.ndarray, groups: np.ndarray,
                   config: ProbeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Balanced accuracy [layer + 1, fold] of the task and of the control labels."""
    folds = StratifiedGroupKFold(n_splits=config.n_folds, shuffle=True, random_state=config.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = list(folds.split(np.zeros(len(labels)), labels, groups))
    task = np.zeros((resid.shape[0], config.n_folds))
    ctrl = np.zeros_like(task)
    for layer, x in enumerate(resid):
        for f, (train, test) in enumerate(splits):
            for y, scores in ((labels, task), (control, ctrl)):
                probe = make_pipeline(StandardScaler(), LogisticRegression(C=config.C, class_weight="balanced",
                                                                           max_iter=config.max_iter))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    probe.fit(x[train], y[train])
                scores[layer, f] = balanced_accuracy_score(y[test], probe.predict(x[test]))
    return task, ctrl


def run(plan: Plan, models: Models) -> list[Row]:
    shipped = models.organism is not None
    bundle, bridge = (models.organism, models.organism_tl) if shipped else (models.big, models.big_tl)
    model_name = "shipped organism" if shipped else "GPT-2-small-shaped"
    dataset = number_dataset(plan.probe_sentences)
    texts = [e.text for e in dataset.examples]
    config = ProbeConfig()

    def ours_features():
        return extract_features(bundle, dataset, token="last")

    def tl():
        return tl_features(bridge, bundle.tokenizer, texts, bundle.n_layers)

    features, theirs = ours_features(), tl()  # also the warm-up
    feature_diff = float(np.abs(features.resid - theirs).max())
    t_ours, t_tl = time_pair(ours_features, tl, plan.probe_repeats, warmup=0)
    rows = [Row(WORKLOAD, f"features: {len(texts)} sentences, {bundle.n_layers + 1} layers", model_name, t_ours,
                f"TL run_with_cache, batches of {BATCH}", t_tl,
                check=f"features max |diff| {feature_diff:.1e}")]

    labels, groups = dataset.labels, dataset.sentence_ids
    control = control_task_labels(dataset, config.seed)

    def ours_probes():
        return run_probes(features, dataset, config)

    def plain():
        return sklearn_probes(features.resid, labels, control, groups, config)

    report, (task, ctrl) = ours_probes(), plain()
    accuracy_diff = max(float(np.abs(report.task_scores - task).max()),
                        float(np.abs(report.control_scores - ctrl).max()))
    t_ours, t_plain = time_pair(ours_probes, plain, plan.probe_repeats, warmup=0)
    rows.append(Row(WORKLOAD, f"probes: {config.n_folds}-fold CV grouped by sentence, task + control, "
                              f"{bundle.n_layers + 1} layers", model_name, t_ours,
                    "plain scikit-learn loop, same pipeline and folds", t_plain,
                    check=f"balanced accuracy max |diff| {accuracy_diff:.1e}; best layer {report.best_layer} "
                          f"at {report.task_mean[report.best_layer]:.3f}"))
    return rows
