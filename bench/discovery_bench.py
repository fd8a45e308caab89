"""Workload 9: circuit discovery (issue 18) against TransformerLens 4.3's edge attribution patching
(`transformer_lens.tools.analysis.attribution_patching`: `attribution_patch` and `faithfulness`).

TransformerLens' graph is ours unrolled over positions: a writer at position p feeds the readers at position p, so
summing its per-position edge scores over positions gives our edge's score. Its convention is denoising (gradient
on the corrupted run, times a_clean - a_corrupt); ours is noising (gradient on the clean run, times a_corrupt -
a_clean), so the EAP check hands it our pairs with clean and corrupted swapped. It has no EAP-IG
(`ig_steps > 1` raises), so the anchor for EAP-IG is what a TransformerLens user writes with its own pieces: for
each pair, its activation-and-gradient cache at each of the m interpolated embeddings (a `hook_embed` hook), the
reader gradients averaged, and its `_edge_effects` scoring. Its `faithfulness` evaluates one pair at a time
(it refuses a batch) and adds one forward per edge class for its breakdown; each circuit is ours mapped to its
per-position edges.

The floor is the bare model (Hugging Face forward, no hooks) doing the passes the work needs on the same batches:
per batch, m forward+backward passes to the input embeddings and two forwards for the sender outputs (EAP-IG),
then three forwards for the baselines and one per circuit of the sweep.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.common import Models, Plan, Row, Timing, corpus_text, time_many, timed, torch_profile
from interp_core.discovery import (
    acdc,
    build_graph,
    contributions,
    edge_scores,
    faithfulness_curve,
    ioi_pairs,
    top_edges,
)
from interp_core.discovery.pairs import PairData
from interp_core.discovery.scores import corrupt_outputs, mean_metric
from interp_core.patching.tasks import PatchingTask
from interp_core.trace import layer_pattern, run_trace

WORKLOAD = "9. Circuit discovery"
MAX_RELATIVE_DIFF = 1e-4  # EAP scores equal TransformerLens' within 1e-4 relative (to the largest |score|)
ANCHOR_RATIO = 0.5  # EAP-IG + sweep <= 0.5x TransformerLens
FLOOR_RATIO = 1.5  # ... and <= 1.5x the bare passes
ROUTES_RATIO = 1.5  # a contribution graph <= 1.5x the trace of its prompt
ACDC_SECONDS = 90.0  # "about a minute" on the organism


def _tl():
    import transformer_lens.tools.analysis.attribution_patching as ap

    return ap


# -- our graph <-> TransformerLens' per-position graph -----------------------------------------------------------

_WRITERS = {"input": "embed", "head": "attn_head_out", "mlp": "mlp_out"}
_READERS = {"q": "q_input", "k": "k_input", "v": "v_input", "mlp": "mlp_in", "logits": "logits"}


def _tl_node(node, kinds: dict, n_layers: int, position: int):
    ap = _tl()
    layer = None if node.kind == "input" else (n_layers - 1 if node.kind == "logits" else node.layer)
    return ap.Node(kind=kinds[node.kind], layer=layer, head=None if node.head < 0 else node.head,
                   position=position)


def _edge_key(writer, reader) -> tuple:
    return (writer.kind, writer.layer, writer.head, reader.kind, reader.layer, reader.head)


def tl_scores_as_ours(graph, tl_edge_scores: dict) -> torch.Tensor:
    """[sender, receiver] TransformerLens' per-position edge scores summed over positions, on our graph."""
    summed: dict[tuple, float] = {}
    for (writer, reader), score in tl_edge_scores.items():
        key = _edge_key(writer, reader)
        summed[key] = summed.get(key, 0.0) + score
    out = torch.zeros(graph.edges.shape, dtype=torch.float64)
    for s, r in graph.edge_index.tolist():
        probe_w = _tl_node(graph.senders[s], _WRITERS, graph.n_layers, 0)
        probe_r = _tl_node(graph.receivers[r], _READERS, graph.n_layers, 0)
        out[s, r] = summed[_edge_key(probe_w, probe_r)]
    return out


def tl_circuit(graph, circuit: torch.Tensor, n_pos: int) -> list:
    """Our circuit ([sender, receiver] bool) as TransformerLens' (writer, reader) edges at every position."""
    pairs = circuit.nonzero().tolist()
    return [(_tl_node(graph.senders[s], _WRITERS, graph.n_layers, p),
             _tl_node(graph.receivers[r], _READERS, graph.n_layers, p)) for p in range(n_pos) for s, r in pairs]


def _metric(task: PatchingTask):
    return lambda logits: logits[0, -1, task.answer_id] - logits[0, -1, task.foil_id]


def _device(bridge) -> torch.device:
    return next(bridge.parameters()).device


# -- the TransformerLens anchors ------------------------------------------------------------------------------


def tl_eap(bridge, data: PairData) -> dict:
    """TransformerLens' EAP on our pairs with clean and corrupted swapped (its denoising = our noising), averaged
    over the pairs like ours: {(writer, reader): score}."""
    ap, device = _tl(), _device(bridge)
    total: dict = {}
    for task in data.tasks:
        result = ap.attribution_patch(bridge, task.corrupt_ids[None].to(device), task.clean_ids[None].to(device),
                                      _metric(task), ap.EdgeAttributionConfig(granularity="edge"))
        for edge, score in result.edge_scores.items():
            total[edge] = total.get(edge, 0.0) + score / len(data)
    return total


def tl_eap_ig(bridge, data: PairData, steps: int) -> dict:
    """EAP-IG on the inputs written with TransformerLens' pieces (see the module docstring), in our convention."""
    ap, device = _tl(), _device(bridge)
    n_layers = int(bridge.cfg.n_layers)
    names = ap._edge_hook_names(n_layers)
    readers = ap._reader_hook_names(n_layers) + [f"blocks.{n_layers - 1}.hook_resid_post"]
    total: dict = {}
    with ap._edge_hook_flags(bridge):
        for task in data.tasks:
            clean, corrupt, metric = task.clean_ids[None].to(device), task.corrupt_ids[None].to(device), _metric(task)
            clean_cache = ap.cache_activation_and_gradient(bridge, clean, metric, names, compute_gradient=False)
            corrupt_cache = ap.cache_activation_and_gradient(bridge, corrupt, metric, names, compute_gradient=False)
            e_clean, e_corrupt = clean_cache.activations["hook_embed"], corrupt_cache.activations["hook_embed"]
            grads: dict = {}
            for k in range(steps):
                point = e_corrupt + k / steps * (e_clean - e_corrupt)
                with bridge.hooks(fwd_hooks=[("hook_embed", lambda t, hook, point=point: point)]):
                    step = ap.cache_activation_and_gradient(bridge, clean, metric, readers)
                for name, grad in step.gradients.items():
                    grads[name] = grad / steps + grads.get(name, 0.0)
            averaged = ap.GradientCache(activations=clean_cache.activations, gradients=grads,
                                        metric=clean_cache.metric)
            edges = ap.enumerate_edges(bridge, clean_cache)
            for edge, score in ap._edge_effects(corrupt_cache, averaged, edges).items():
                total[edge] = total.get(edge, 0.0) + score / len(data)
    return total


def tl_faithfulness_calls(bridge, graph, data: PairData, calls: list[tuple[int, torch.Tensor]]) -> list[float]:
    """TransformerLens' faithfulness, one call per (pair index, circuit): each call's ablated metric."""
    ap, device = _tl(), _device(bridge)
    values = []
    for i, circuit in calls:
        task = data.tasks[i]
        result = ap.faithfulness(bridge, task.clean_ids[None].to(device), task.corrupt_ids[None].to(device),
                                 _metric(task), tl_circuit(graph, circuit, task.n_pos))
        values.append(result.corrupt_metric + result.recovered * (result.full_metric - result.corrupt_metric))
    return values


def sampled_calls(n_pairs: int, circuits: list[torch.Tensor], n_calls: int) -> list[tuple[int, torch.Tensor]]:
    """`n_calls` of the sweep's (pair, circuit) calls, circuits evenly spread over the sweep, pairs in turn."""
    picks = [round(k * (len(circuits) - 1) / max(1, n_calls - 1)) for k in range(n_calls)]
    return [(k % n_pairs, circuits[c]) for k, c in enumerate(picks)]


# -- the floor ------------------------------------------------------------------------------------------------


def bare_passes(bundle, data: PairData, steps: int, n_circuits: int) -> None:
    """The passes EAP-IG and its sweep need, on the bare model (see the module docstring)."""
    model, embedding = bundle.model, bundle.adapter.token_embedding(bundle.model)
    for batch in data.batches():
        clean, corrupt = batch.clean.to(bundle.device), batch.corrupt.to(bundle.device)
        with torch.no_grad():
            e_clean, e_corrupt = embedding(clean), embedding(corrupt)
        for k in range(steps):
            point = (e_corrupt + k / steps * (e_clean - e_corrupt)).requires_grad_(True)
            logits = model(inputs_embeds=point, use_cache=False, logits_to_keep=1).logits[:, -1]
            torch.autograd.grad(batch.logit_difference(logits).sum(), point)
        with torch.no_grad():
            for ids in [clean, corrupt] * 2 + [corrupt] + [clean] * n_circuits:
                model(input_ids=ids, use_cache=False, logits_to_keep=1)


# -- the rows -------------------------------------------------------------------------------------------------


def _relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs| over every edge."""
    return float((ours - theirs).abs().max() / theirs.abs().max())


def _eap_row(name: str, bundle, bridge, graph, data: PairData) -> Row:
    t_ours, ours = timed(lambda: edge_scores(bundle, graph, data, method="eap"))
    t_tl, theirs = timed(lambda: tl_scores_as_ours(graph, tl_eap(bridge, data)))
    relative = _relative(ours.scores, theirs)
    return Row(WORKLOAD, f"EAP edge scores, IOI, {len(data)} pairs", name, Timing((t_ours,)),
               "TL attribution_patch(granularity='edge'), one pair at a time", Timing((t_tl,)),
               target=f"relative difference <= {MAX_RELATIVE_DIFF:g}", met=relative <= MAX_RELATIVE_DIFF,
               check=f"max |diff| / max |score| {relative:.1e} over {graph.n_edges} edges (TL's per-position "
                     "scores summed over positions)")


def _sweep_rows(name: str, bundle, bridge, graph, data: PairData, n_tl_pairs: int, n_tl_calls: int,
                steps: int = 5) -> list[Row]:
    """EAP-IG + a 20-point faithfulness sweep: ours, the bare passes, and TransformerLens (partly sampled)."""
    t_scores, scores = timed(lambda: edge_scores(bundle, graph, data, method="eap_ig", steps=steps))
    t_curve, curve = timed(lambda: faithfulness_curve(bundle, scores, data, n_random=0))
    t_ours = t_scores + t_curve
    t_floor, _ = timed(lambda: bare_passes(bundle, data, steps, len(curve.sizes)))
    tl_pairs = data.subset(range(min(n_tl_pairs, len(data))))
    t_tl_ig, tl_ig = timed(lambda: tl_scores_as_ours(graph, tl_eap_ig(bridge, tl_pairs, steps)))
    mine_ig = edge_scores(bundle, graph, tl_pairs, method="eap_ig", steps=steps).scores
    circuits = [top_edges(scores, size) for size in curve.sizes]
    calls = sampled_calls(len(data), circuits, n_tl_calls)
    t_tl_sweep, tl_values = timed(lambda: tl_faithfulness_calls(bridge, graph, data, calls))
    ours_values = [_ablated(bundle, graph, data.subset([i]), circuit) for i, circuit in calls]
    t_tl = t_tl_ig * len(data) / len(tl_pairs) + t_tl_sweep * len(data) * len(circuits) / len(calls)
    case = f"EAP-IG ({steps} steps) + {len(circuits)}-point faithfulness sweep, IOI, {len(data)} pairs"
    check = (f"EAP-IG vs TL's pieces: max |diff| / max |score| {_relative(mine_ig, tl_ig):.1e} ({len(tl_pairs)} "
             f"pairs); ablated metric vs TL faithfulness: max |diff| "
             f"{max(abs(a - b) for a, b in zip(ours_values, tl_values, strict=True)):.1e} ({len(calls)} calls); "
             f"faithfulness at 10% of the edges {_at_tenth(curve, graph):.3f}")
    note = (f"TL's time: EAP-IG timed on {len(tl_pairs)} of {len(data)} pairs and faithfulness on {len(calls)} of "
            f"its {len(data) * len(circuits)} (pair, circuit) calls, each scaled to the whole work "
            f"({t_tl_ig:.1f} s and {t_tl_sweep:.1f} s measured)")
    return [Row(WORKLOAD, case, name, Timing((t_ours,)), "TL (EAP-IG from its pieces; its faithfulness)",
                Timing((t_tl,)), target=f"<= {ANCHOR_RATIO}x", met=t_ours <= ANCHOR_RATIO * t_tl, check=check,
                note=note),
            Row(WORKLOAD, case, name, Timing((t_ours,)), "floor: the bare model's forward and backward passes",
                Timing((t_floor,)), target=f"<= {FLOOR_RATIO}x", met=t_ours <= FLOOR_RATIO * t_floor,
                profile=_floor_profile(bundle, graph, data, scores, t_scores, t_curve, t_floor))]


def _floor_profile(bundle, graph, data: PairData, scores, t_scores: float, t_curve: float, t_floor: float) -> str:
    circuit = top_edges(scores, graph.n_edges // 10)
    return (f"Ours: EAP-IG {t_scores:.1f} s, the sweep {t_curve:.1f} s; the bare passes {t_floor:.1f} s. What the "
            "graph adds to the bare model: each head's q, k and v are computed from an input of their own (a layer "
            "norm and a projection per head and kind, in the forward and the backward pass: the graph's definition, "
            "as TransformerLens' use_split_qkv_input and the EAP-IG reference), each sender's output and its "
            "corrupt - current difference, and the cut edges' sums.\n\ntorch.profiler, one evaluation of the "
            "circuit of a tenth of the edges:\n" + torch_profile(lambda: _ablated(bundle, graph, data, circuit)))


def _ablated(bundle, graph, data: PairData, circuit: torch.Tensor) -> float:
    """Our metric with every edge outside `circuit` corrupted."""
    return mean_metric(bundle, graph, data, graph.edges & ~circuit, corrupt_outputs(bundle, graph, data))


def _at_tenth(curve, graph) -> float:
    """The curve's faithfulness at the size nearest a tenth of the edges."""
    sizes = list(curve.sizes)
    return curve.faithfulness[min(range(len(sizes)), key=lambda i: abs(sizes[i] - graph.n_edges / 10))]


def _acdc_row(bundle, graph, data: PairData) -> Row:
    t_acdc, found = timed(lambda: acdc(bundle, graph, data))
    return Row(WORKLOAD, f"ACDC (threshold {found.threshold}), IOI, {len(data)} pairs", "shipped organism",
               Timing((t_acdc,)), target=f"about a minute (<= {ACDC_SECONDS:.0f} s)", met=t_acdc <= ACDC_SECONDS,
               check=f"{found.evaluations} evaluations; {int(found.circuit.sum())} of {graph.n_edges} edges kept, "
                     f"faithfulness {found.faithfulness:.3f}")


def _proximities_alone(bundle, trace) -> Callable[[], object]:
    """The part of a contribution graph its definition cannot skip: every head and source's L1 distance to each
    sum (routes._head_proximity), on the layers' patterns and written values computed beforehand."""
    from interp_core.discovery.routes import _head_proximity, _written_values

    inputs = [(layer_pattern(bundle, trace, layer), _written_values(bundle, trace.resid[layer], layer),
               trace.resid[layer] + trace.attn_out[layer]) for layer in range(trace.n_layers)]
    return lambda: [_head_proximity(*args) for args in inputs]


def _routes_row(bundle, plan: Plan) -> Row:
    ids = bundle.tokenizer(corpus_text(bundle.tokenizer, plan.routes_tokens))["input_ids"][:plan.routes_tokens]
    prompt = bundle.tokenizer.decode(ids)
    trace = run_trace(bundle, prompt, max_tokens=4 * plan.routes_tokens)
    t_routes, t_trace, t_parts = time_many([lambda: contributions(bundle, trace),
                                            lambda: run_trace(bundle, prompt, max_tokens=4 * plan.routes_tokens),
                                            _proximities_alone(bundle, trace)], repeats=5, warmup=1)
    error = contributions(bundle, trace).rebuild_error
    row = Row(WORKLOAD, f"contribution graph (information-flow routes), {trace.n_pos} tokens", "GPT-2-small-shaped",
              t_routes, "our trace of the same prompt", t_trace, target=f"<= {ROUTES_RATIO}x, parts = sums within 1e-5",
              check=f"parts rebuild the residual sums within {error:.1e}; the parts' L1 distances alone (heads x "
                    f"sources x d_model per target and layer, elementwise) take {t_parts.median * 1e3:.0f} ms, "
                    f"{t_parts.median / t_trace.median:.2f}x the trace")
    row.met = row.ratio <= ROUTES_RATIO and error <= 1e-5
    return row


def run(plan: Plan, models: Models) -> list[Row]:
    n_organism, n_big = plan.discovery_pairs
    rows = []
    for name, bundle, bridge, n_pairs, k in (("shipped organism", models.organism, models.organism_tl, n_organism,
                                             0), ("GPT-2-small-shaped", models.big, models.big_tl, n_big, 1)):
        if bundle is None:
            continue
        graph, data = build_graph(bundle), ioi_pairs(bundle, n=n_pairs)
        rows.append(_eap_row(name, bundle, bridge, graph, data.subset(range(plan.tl_score_pairs[k]))))
        rows += _sweep_rows(name, bundle, bridge, graph, data, plan.tl_score_pairs[k], plan.tl_sweep_calls[k])
        if bundle is models.organism:
            rows.append(_acdc_row(bundle, graph, data))
    rows.append(_routes_row(models.big, plan))
    return rows
