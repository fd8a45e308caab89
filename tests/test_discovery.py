"""Circuit discovery's core on every family: the graph's edge counts, the run on the graph (nothing cut = the model,
everything cut = the corrupted run), receiver gradients against finite differences of edge cutting, EAP against
exact edge patching, and circuits' faithfulness (full = 1, empty = 0)."""

from __future__ import annotations

import pytest
import torch
from helpers import make_tiny_tokenizer
from transformers import GPT2Config, GPT2LMHeadModel

from interp_core import activations
from interp_core.discovery import graph_run
from interp_core.discovery.faithfulness import Baselines, faithfulness, prune, top_edges
from interp_core.discovery.graph import build_graph
from interp_core.discovery.graph_run import run_on_graph, sender_outputs
from interp_core.discovery.pairs import PairData
from interp_core.discovery.routes import contributions, route_edges
from interp_core.discovery.scores import EdgeScores, edge_scores, mean_metric
from interp_core.discovery.tasks import PairsFileError, ioi_pairs, pairs_from_csv, split_pairs
from interp_core.loading import bundle_from_model
from interp_core.patching import PatchingTask
from interp_core.trace import run_trace
from tests.shipped import shipped_bundle

PAIRS = [("The capital of France is", "The capital of Italy is"), ("When Mary and John went to the store, John",
         "When Mary and John went to the store, Mary")]


def pair_data(bundle) -> PairData:
    """Two pairs; answer and foil are the clean prompt's top two predictions (any tokens do for the properties)."""
    tasks = []
    for clean, corrupt in PAIRS:
        clean_ids, corrupt_ids = (torch.tensor(bundle.tokenizer(text)["input_ids"]) for text in (clean, corrupt))
        answer, foil = activations.forward(bundle, clean_ids[None])[0, -1].topk(2).indices.tolist()
        tokens = [str(t) for t in clean_ids.tolist()]
        tasks.append(PatchingTask("test", clean_ids, corrupt_ids, answer, foil, tokens, tokens, "a", "b"))
    return PairData.from_tasks("test pairs", tasks)


def graph_edge_count(n_layers: int, n_heads: int, n_kv: int) -> int:
    """EAP-IG's count for a sequential block: every receiver reads every sender that writes before it."""
    heads = sum((n_heads + 2 * n_kv) * (1 + layer * (n_heads + 1)) for layer in range(n_layers))
    mlps = sum(1 + (layer + 1) * n_heads + layer for layer in range(n_layers))
    return heads + mlps + 1 + n_layers * (n_heads + 1)


def test_the_graph_has_eap_igs_edge_counts(tiny_bundle):
    graph = build_graph(tiny_bundle)
    n_kv = tiny_bundle.adapter.n_kv_heads(tiny_bundle.model)
    if not graph.parallel:
        assert graph.n_edges == graph_edge_count(tiny_bundle.n_layers, tiny_bundle.n_heads, n_kv)
    assert len(graph.edge_names()) == graph.n_edges == len(set(graph.edge_names()))


def test_gpt2_small_shape_has_32491_edges_and_the_organism_479():
    config = GPT2Config(n_layer=12, n_head=12, n_embd=24, vocab_size=50, n_positions=16)
    bundle = bundle_from_model(GPT2LMHeadModel(config), make_tiny_tokenizer(), "gpt2-small-shape")
    assert build_graph(bundle).n_edges == 32_491
    assert graph_edge_count(4, 4, 4) == 479
    assert build_graph(shipped_bundle()).n_edges == 479


def test_nothing_cut_is_the_model_and_everything_cut_is_the_corrupted_run(tiny_bundle):
    graph, batch = build_graph(tiny_bundle), next(pair_data(tiny_bundle).batches())
    plain = activations.forward(tiny_bundle, batch.clean)[:, -1]
    corrupt = activations.forward(tiny_bundle, batch.corrupt)[:, -1]
    outputs = sender_outputs(tiny_bundle, graph, batch.corrupt)
    none = run_on_graph(tiny_bundle, graph, batch.clean, cut=torch.zeros_like(graph.edges), corrupt=outputs)
    every = run_on_graph(tiny_bundle, graph, batch.clean, cut=graph.edges, corrupt=outputs)
    torch.testing.assert_close(none.logits, plain.detach(), rtol=0, atol=1e-5)  # fused attention: rounding only
    torch.testing.assert_close(every.logits, corrupt.detach(), rtol=1e-4, atol=1e-4)


def test_summing_the_kept_edges_or_the_cut_ones_gives_the_same_run(tiny_bundle, monkeypatch):
    """A receiver's input is its stream plus the cut edges' differences, or the corrupted stream less the kept
    edges' differences: the two sums the run picks between agree on a random cut of most edges."""
    graph, batch = build_graph(tiny_bundle), next(pair_data(tiny_bundle).batches())
    outputs = sender_outputs(tiny_bundle, graph, batch.corrupt)
    cut = graph.edges & (torch.rand(graph.edges.shape, generator=torch.Generator().manual_seed(1)) < 0.8)
    kept_summed = run_on_graph(tiny_bundle, graph, batch.clean, cut=cut, corrupt=outputs).logits
    monkeypatch.setattr(graph_run, "SUM_KEPT_ABOVE", 1.0)
    cut_summed = run_on_graph(tiny_bundle, graph, batch.clean, cut=cut, corrupt=outputs).logits
    torch.testing.assert_close(kept_summed, cut_summed, rtol=0, atol=1e-4)
    plain = activations.forward(tiny_bundle, batch.clean)[:, -1].detach()
    assert float((kept_summed - plain).abs().max()) > 1e-2  # the cut changed the run


def test_receiver_gradients_match_finite_differences_of_cutting_one_edge(tiny_bundle):
    """Cutting s -> r with 'corrupt' outputs = clean + t R adds t R_s to r's input, so the metric moves by
    t * sum(R_s . grad_r) to first order: checked for an edge into every kind of receiver."""
    graph, batch = build_graph(tiny_bundle), next(pair_data(tiny_bundle).batches())
    clean = sender_outputs(tiny_bundle, graph, batch.clean)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    t = 1e-2  # a central difference: its error is O(t^2)

    def metric(logits):
        return batch.logit_difference(logits).sum()

    grads = run_on_graph(tiny_bundle, graph, batch.clean, receiver_grads=True, metric=metric).grads
    for kind in ("q", "k", "v", "mlp", "logits"):
        r = next(i for i, node in enumerate(graph.receivers) if node.kind == kind and node.layer == graph.n_layers
                 - 1 or node.kind == kind == "logits")
        s = graph.edges[:, r].nonzero().flatten()[-1].item()  # the latest sender into it
        cut = torch.zeros_like(graph.edges)
        cut[s, r] = True
        up, down = (float(metric(run_on_graph(tiny_bundle, graph, batch.clean, cut=cut, corrupt=clean + step
                                              * noise).logits)) for step in (t, -t))
        predicted = float((noise[s] * grads[r]).sum())
        assert (up - down) / (2 * t) == pytest.approx(predicted, rel=2e-2, abs=1e-3), kind


def test_full_circuit_is_1_and_empty_circuit_is_0(tiny_bundle):
    graph, data = build_graph(tiny_bundle), pair_data(tiny_bundle)
    base = Baselines.measure(tiny_bundle, graph, data)
    assert faithfulness(tiny_bundle, graph, data, graph.edges, base) == 1.0
    assert faithfulness(tiny_bundle, graph, data, torch.zeros_like(graph.edges), base) == pytest.approx(0, abs=1e-4)


def test_eap_is_exact_patching_to_first_order_and_pruning_keeps_paths(gpt2_bundle):
    graph, data = build_graph(gpt2_bundle), pair_data(gpt2_bundle)
    eap = edge_scores(gpt2_bundle, graph, data, method="eap").edge_values()
    exact = edge_scores(gpt2_bundle, graph, data, method="exact").edge_values()
    assert torch.corrcoef(torch.stack([eap, exact]))[0, 1] > 0.5  # a tiny random model is far from linear
    circuit = top_edges(edge_scores(gpt2_bundle, graph, data, method="eap"), 10)
    assert circuit.sum() <= 10 and torch.equal(prune(graph, circuit), circuit)


# -- known truth on the shipped organism (its planted IOI) ---------------------------------------------------------


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    rank = lambda x: torch.argsort(torch.argsort(x)).double()  # noqa: E731
    return float(torch.corrcoef(torch.stack([rank(a), rank(b)]))[0, 1])


@pytest.fixture(scope="module")
def organism_ioi():
    bundle = shipped_bundle()
    graph = build_graph(bundle)
    data = ioi_pairs(bundle, n=32)
    return bundle, graph, data


def test_on_the_organisms_ioi_eap_and_eap_ig_rank_edges_like_exact_patching(organism_ioi):
    """Ranked by |score|, as circuits are chosen. Measured (32 pairs): EAP 0.96, EAP-IG (5 steps) 0.87; signed,
    0.86 and 0.65. EAP linearises exactly what single-edge patching from the clean run measures, so here it ranks
    closer than EAP-IG (issue 18 asked for EAP-IG >= EAP; reported there)."""
    bundle, graph, data = organism_ioi
    exact = edge_scores(bundle, graph, data, method="exact").edge_values().abs()
    eap = edge_scores(bundle, graph, data, method="eap").edge_values().abs()
    eap_ig = edge_scores(bundle, graph, data, method="eap_ig", steps=5).edge_values().abs()
    assert spearman(eap_ig, exact) >= 0.85 and spearman(eap, exact) >= 0.85, (spearman(eap_ig, exact),
                                                                              spearman(eap, exact))


def test_eap_ig_is_complete_on_the_input_node(organism_ioi):
    """Integrated gradients' completeness: the input's edges sum to m(corrupt) - m(clean) as the steps grow."""
    bundle, graph, data = organism_ioi
    span = mean_metric(bundle, graph, data, which="corrupt") - mean_metric(bundle, graph, data)
    coarse, fine = (float(edge_scores(bundle, graph, data, method="eap_ig", steps=m).scores[0].sum())
                    for m in (5, 40))
    assert abs(fine - span) < 0.01 * abs(span) and abs(fine - span) < abs(coarse - span) + 1e-9


def test_an_organism_ioi_circuit_of_a_tenth_of_the_edges_carries_held_out_names(organism_ioi):
    bundle, graph, data = organism_ioi
    scores = edge_scores(bundle, graph, data, method="eap_ig", steps=5)
    held_out = ioi_pairs(bundle, n=32, names="held_out")
    circuit = top_edges(scores, graph.n_edges // 10)
    found = faithfulness(bundle, graph, held_out, circuit)
    generator = torch.Generator().manual_seed(0)
    random_scores = EdgeScores(graph, torch.rand(graph.edges.shape, generator=generator, dtype=torch.float64)
                               * graph.edges, "random", "IOI")
    chance = faithfulness(bundle, graph, held_out, top_edges(random_scores, graph.n_edges // 10))
    assert found >= 0.8 and found - chance >= 0.3, (found, chance)


# -- uploaded pairs --------------------------------------------------------------------------------------------


def csv_of(*rows: str, header: str = "clean,corrupted,answer,foil") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def test_an_uploaded_csv_of_pairs_becomes_the_task_and_splits_into_halves(gpt2_bundle):
    good = '"The capital of France is","The capital of Italy is", Paris, Rome'
    data = pairs_from_csv(gpt2_bundle, csv_of(*[good] * 6))
    assert len(data) == 6 and len(split_pairs(data, "scoring")) == len(split_pairs(data, "held_out")) == 3
    assert len(split_pairs(pairs_from_csv(gpt2_bundle, csv_of(good)), "held_out")) == 1  # too few to split


@pytest.mark.parametrize(("content", "says"), [
    (csv_of('"The capital of France is","The capital of the Republic of Italy is", Paris, Rome'),
     "line 2: The clean prompt is"),
    (csv_of('"The capital of France is","The capital of Italy is", Paris,'), "line 2:"),
    (csv_of("a,b,c", header="clean,corrupted,answer"), "it lacks foil"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (csv_of(), "has 0 pairs"),
])
def test_a_bad_pairs_file_is_refused_naming_the_rows_and_the_problem(gpt2_bundle, content, says):
    with pytest.raises(PairsFileError, match=says):
        pairs_from_csv(gpt2_bundle, content)


# -- information-flow routes -----------------------------------------------------------------------------------


def test_contribution_parts_rebuild_every_residual_sum_and_shares_add_up(tiny_bundle):
    trace = run_trace(tiny_bundle, "When Mary and John went to the store, John gave a drink to")
    found = contributions(tiny_bundle, trace)
    assert found.rebuild_error < 1e-5
    attention_total = found.attention.sum(-1) + found.attn_residual + found.attn_bias
    torch.testing.assert_close(attention_total, torch.ones_like(attention_total), atol=1e-5, rtol=0)
    torch.testing.assert_close(found.attention.sum(-1), found.heads.sum(-1), atol=1e-5, rtol=0)
    assert torch.all(found.attention.triu(1) == 0)  # nothing from the future
    edges = route_edges(found, threshold=0.05)
    assert len(edges) and set(edges["kind"]) <= {"attention", "residual"}
    assert edges[edges["layer"] == trace.n_layers - 1]["target"].eq(trace.n_pos - 1).all()  # into the last token
