"""What each page's finding records as its key numbers, and how a re-check recomputes them.

A kind is one page's finding: `summarise` turns the page's own results into numbers (the page calls it on what it
has drawn), and `recompute` runs the same analyses again from the finding's `inputs` (JSON values) and summarises
them the same way. A re-check compares the two (interp_core.findings.recheck). Names of numbers are the words a
reader sees in the report.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from interp_core import attribution as attr
from interp_core import circuits, discovery, patching, probing
from interp_core.attention import HEAD_METRICS, HeadSummary, head_summaries
from interp_core.lens import logit_lens, next_token_predictions
from interp_core.lens.lens import LensResult, NextTokenPredictions
from interp_core.loading import ModelBundle
from interp_core.trace import Trace

Numbers = dict[str, float]


@dataclass(frozen=True)
class Kind:
    page: str  # the page's file relative to app.py
    label: str  # the page's name as the sidebar shows it
    recompute: Callable[[ModelBundle, Trace, dict], Numbers]


def finite(numbers: dict) -> Numbers:
    """The numbers as plain floats, leaving out those that are not finite (a score of a one-token prompt)."""
    return {name: float(value) for name, value in numbers.items() if math.isfinite(float(value))}


# --- Overview -----------------------------------------------------------------------------------------------------
def overview_numbers(predictions: NextTokenPredictions) -> Numbers:
    return finite({"top-1 probability": predictions.probs[0], "top-1 token id": predictions.token_ids[0]})


def _overview(bundle, trace, inputs) -> Numbers:
    return overview_numbers(next_token_predictions(bundle, trace, 1))


# --- Attention ----------------------------------------------------------------------------------------------------
def attention_numbers(summary: HeadSummary, layer: int, head: int | None) -> Numbers:
    """The head's scores (head None: the mean over the layer's heads)."""
    def value(name):
        row = getattr(summary, name)[layer]
        return row.mean() if head is None else row[head]
    return finite({HEAD_METRICS[name][0]: value(name) for name in HEAD_METRICS})


def _attention(bundle, trace, inputs) -> Numbers:
    head = None if inputs["mean"] else int(inputs["head"])
    return attention_numbers(head_summaries(bundle, trace), int(inputs["layer"]), head)


# --- Attribution --------------------------------------------------------------------------------------------------
def attribution_settings(inputs: dict) -> attr.AttributionSettings:
    baseline = attr.Baseline(inputs["baseline"], text=inputs["baseline_text"] if inputs["baseline"] == "text" else "")
    return attr.AttributionSettings(inputs["method"], inputs["aggregation"], baseline, int(inputs["n_steps"]),
                                    inputs["quadrature"])


def settings_inputs(settings: attr.AttributionSettings) -> dict:
    """The inverse of attribution_settings: the settings as JSON values."""
    return {"method": settings.method, "aggregation": settings.aggregation, "baseline": settings.baseline.kind,
            "baseline_text": settings.baseline.text, "n_steps": settings.n_steps, "quadrature": settings.quadrature}


def attribution_numbers(result: attr.Attribution, curve: attr.DeletionCurve | None = None) -> Numbers:
    numbers = {"target value": result.target_value, "sum of the token scores": result.scores.sum()}
    if result.delta is not None:
        numbers["completeness residual"] = result.delta
    if curve is not None:
        numbers |= {"deletion AOPC": curve.aopc, "deletion AOPC, random orders": curve.random_aopc}
    return finite(numbers)


def continuation_numbers(result) -> Numbers:
    return finite({"log p of the continuation": result.target_values.sum(),
                   "continuation tokens": len(result.output_tokens)})


def _attribution(bundle, trace, inputs) -> Numbers:
    settings = attribution_settings(inputs)
    if inputs.get("mode") == "continuation":
        return continuation_numbers(attr.attribute_continuation(
            bundle, trace, **settings.as_kwargs(), n_tokens=int(inputs["n_tokens"]),
            continuation=inputs["continuation"] or None))
    target = attr.target_from_text(bundle, attr.as_typed(inputs["token_a"]), attr.as_typed(inputs["token_b"]))
    result = attr.attribute(bundle, trace, target, **settings.as_kwargs())
    curve = None
    if inputs["deletion"]:
        report = attr.compare_methods(bundle, trace, target, settings, methods=(settings.method,), reuse=result)
        curve = report.curve(settings.method)
    return attribution_numbers(result, curve)


# --- Probing ------------------------------------------------------------------------------------------------------
def probing_numbers(report: probing.ProbeReport, layer: int) -> Numbers:
    best = report.best_layer
    numbers = {"best layer": best, "accuracy at the best layer": report.task_mean[best],
               f"accuracy at layer {layer}": report.task_mean[layer], "majority-class baseline": report.baseline}
    if report.selectivity is not None:
        numbers["selectivity at the best layer"] = report.selectivity[best]
    return finite(numbers)


def _probing(bundle, trace, inputs) -> Numbers:
    dataset = probing.builtin_dataset(inputs["dataset"])
    features = probing.extract_features(bundle, dataset, inputs["token"])
    config = probing.ProbeConfig(n_folds=int(inputs["n_folds"]), C=float(inputs["C"]), mlp=bool(inputs["mlp"]))
    return probing_numbers(probing.run_probes(features, dataset, config), int(inputs["layer"]))


# --- Logit lens ---------------------------------------------------------------------------------------------------
def lens_numbers(decoded: LensResult, pos: int) -> Numbers:
    """The target's probability at the output and where it first becomes the top-1 (-1: never)."""
    top1 = (decoded.target_rank[:, pos] == 1).nonzero()
    return finite({"target probability at the output": decoded.target_prob[-1, pos],
                   "first row where the target is top-1": int(top1[0]) if len(top1) else -1,
                   "KL(final || lens) after the embeddings": decoded.kl_to_final[0, pos],
                   "target token id": decoded.target_id})


def _lens(bundle, trace, inputs) -> Numbers:
    tuned_lens = None
    if inputs["lens"] == "tuned":
        from interp_core.lens import tuned
        from interp_core.organism.tuned_lens import LENS_DIR

        tuned_lens = tuned.load(bundle, LENS_DIR)
    return lens_numbers(logit_lens(bundle, trace, int(inputs["target_id"]), tuned=tuned_lens), int(inputs["pos"]))


# --- Circuits, Patching, Ablation ---------------------------------------------------------------------------------
def circuits_numbers(run, ablated, detector: str, layer: int, head: int) -> Numbers:
    label = circuits.head_label(layer, head)
    return finite({f"{detector} score of {label}": run.scores.score(detector)[layer, head],
                   "copy loss, second copy (nats)": run.copy_loss(2),
                   f"copy loss, second copy, {label} ablated (nats)": ablated.copy_loss(2)})


def _repeated(bundle, inputs, heads=(), mode="zero"):
    return circuits.run_repeated(bundle, int(inputs["rep_length"]), int(inputs["rep_seed"]), ablate=heads, mode=mode)


def _circuits(bundle, trace, inputs) -> Numbers:
    layer, head = int(inputs["layer"]), int(inputs["head"])
    return circuits_numbers(_repeated(bundle, inputs), _repeated(bundle, inputs, ((layer, head),)),
                            inputs["detector"], layer, head)


def _task(bundle, inputs) -> patching.PatchingTask:
    choice = patching.choose_task(bundle, inputs["name"], list(inputs["own"]))
    if choice.problem is not None:
        raise choice.problem
    return choice.task


def patching_numbers(report: patching.PatchingReport) -> Numbers:
    numbers = {"logit difference, clean": report.clean_metric, "logit difference, corrupted": report.corrupt_metric}
    for section in report.sections:
        numbers[f"largest exact recovery, {section.title.lower()}"] = section.exact.values.max()
        numbers[f"exact vs attribution patching r, {section.title.lower()}"] = section.correlation
    return finite(numbers)


def _patching(bundle, trace, inputs) -> Numbers:
    return patching_numbers(patching.patching_report(bundle, _task(bundle, inputs)))


def ablation_numbers(run, ablated, result: patching.TaskAblation) -> Numbers:
    return finite({"copy loss, second copy (nats)": run.copy_loss(2),
                   "copy loss, second copy, ablated (nats)": ablated.copy_loss(2),
                   "logit difference, clean": result.clean_metric,
                   "logit difference, clean, ablated": result.ablation.logit_diff_after,
                   "ablated clean run, normalised": result.normalised_after})


def _ablation(bundle, trace, inputs) -> Numbers:
    heads = tuple((int(layer), int(head)) for layer, head in inputs["heads"])
    run = _repeated(bundle, inputs)
    return ablation_numbers(run, _repeated(bundle, inputs, heads, inputs["mode"]),
                            patching.ablate_on_task(bundle, _task(bundle, inputs), heads, inputs["mode"]))


# --- Circuit discovery --------------------------------------------------------------------------------------------
MAX_EXACT_EDGES = 2_000  # one forward pass per edge: the organism has 479, GPT-2 small 32,491


def discovery_numbers(circuit: torch.Tensor, graph: discovery.Graph, faith: float) -> Numbers:
    return finite({"faithfulness (held-out pairs)": faith, "edges in the circuit": circuit.sum(),
                   "nodes in the circuit": len(discovery.circuit_nodes(graph, circuit))})


def _discovery(bundle, trace, inputs) -> Numbers:
    graph = discovery.build_graph(bundle)
    task, n_pairs, method = inputs["task"], int(inputs["n_pairs"]), inputs["method"]
    data = discovery.task_pairs(bundle, task, n_pairs, "scoring")
    held_out = discovery.task_pairs(bundle, task, n_pairs, "held_out")
    if method == "acdc":
        circuit = discovery.acdc(bundle, graph, data).circuit
    else:
        scores = discovery.edge_scores(bundle, graph, data, method=method, steps=int(inputs["steps"]),
                                       max_exact_edges=MAX_EXACT_EDGES)
        circuit = discovery.top_edges(scores, int(inputs["n_edges"]))
    return discovery_numbers(circuit, graph, discovery.faithfulness(bundle, graph, held_out, circuit))


# --- Features -----------------------------------------------------------------------------------------------------
def features_numbers(card, steering=None) -> Numbers:
    """A feature card's density and largest activation, and the steering's KL when it ran."""
    numbers = {"share of corpus tokens it fires on": card.density, "largest activation": card.max_activation}
    if steering is not None:
        numbers["KL(unsteered || steered), nats"] = steering.kl
    return finite(numbers)


def _features(bundle, trace, inputs) -> Numbers:
    """Re-run on the shipped organism SAE that reads inputs["sae"] (the only SAE a finding can name again)."""
    from interp_core.features import card as cards
    from interp_core.features import sae as saes
    from interp_core.features.steering import steer
    from interp_core.organism.token_labels import card_rows
    from interp_core.settings import SHIPPED_MODEL_DIR

    sae = saes.load(bundle, SHIPPED_MODEL_DIR / "saes" / str(inputs["sae"]))
    latent, positions = int(inputs["latent"]), [int(p) for p in inputs["positions"]]
    card = cards.feature_card(bundle, sae, cards.fired_table(bundle, sae, card_rows(bundle.tokenizer).ids), latent)
    steering = steer(bundle, sae, trace.token_ids, latent, str(inputs["mode"]), float(inputs["amount"]),
                     positions) if positions else None
    return features_numbers(card, steering)


KINDS = {
    "overview": Kind("app.py", "Overview", _overview),
    "attention": Kind("pages/1_Attention.py", "Attention", _attention),
    "attribution": Kind("pages/2_Attribution.py", "Attribution", _attribution),
    "probing": Kind("pages/3_Probing.py", "Probing", _probing),
    "logit_lens": Kind("pages/4_Logit_Lens.py", "Logit lens", _lens),
    "circuits": Kind("pages/5_Circuits.py", "Circuits", _circuits),
    "patching": Kind("pages/6_Patching.py", "Patching", _patching),
    "ablation": Kind("pages/7_Ablation.py", "Ablation", _ablation),
    "discovery": Kind("pages/8_Circuit_Discovery.py", "Circuit discovery", _discovery),
    "features": Kind("pages/10_Features.py", "Features", _features),
}

_digests: dict[tuple[str, str], str] = {}
_digests_lock = threading.Lock()


def weights_digest(bundle: ModelBundle) -> str:
    """sha256 (hex, 16 characters) of every parameter and buffer (names, dtypes, shapes, bytes): equal weights,
    equal digest, on any machine (the bundle's own fingerprint names files by path and time). Once per bundle."""
    key = (bundle.ref, bundle.fingerprint)
    with _digests_lock:
        if key not in _digests:
            digest = hashlib.sha256()
            for name, tensor in sorted(bundle.model.state_dict().items()):
                data = tensor.detach().cpu().contiguous()
                digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
                digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
            _digests[key] = digest.hexdigest()[:16]
        return _digests[key]
