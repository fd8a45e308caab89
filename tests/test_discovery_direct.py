"""Each node's direct effect on a task (discovery/direct.py): the parts rebuild the logit difference on every
family, a node's effect equals direct logit attribution's on one pair, and the circuits found on the organism's
capital and induction tasks run through the heads planted and measured there (models/organism/README.md)."""

from __future__ import annotations

import pytest
import torch
from test_discovery import pair_data

from interp_core.discovery import build_graph, capital_pairs, edge_scores, induction_pairs, top_edges
from interp_core.discovery.direct import direct_effects, node_effect_metrics, promoted_tokens
from interp_core.discovery.scores import mean_metric
from interp_core.discovery.views import circuit_nodes
from interp_core.lens.dla import direct_logit_attribution
from interp_core.trace import run_trace
from tests.shipped import shipped_bundle


def test_the_parts_rebuild_the_mean_logit_difference_on_clean_and_corrupted_prompts(tiny_bundle):
    graph, data = build_graph(tiny_bundle), pair_data(tiny_bundle)
    effects = direct_effects(tiny_bundle, graph, data)
    for i, which in enumerate(("clean", "corrupt")):
        parts = float(getattr(effects, which).sum()) + effects.rest[i] + effects.norm_bias[i]
        expected = mean_metric(tiny_bundle, graph, data, which=which)
        assert parts == pytest.approx(expected, abs=1e-4) and effects.metric[i] == pytest.approx(expected, abs=1e-4)


def test_a_nodes_effect_on_one_pair_is_direct_logit_attribution_of_answer_minus_foil(gpt2_bundle):
    graph, data = build_graph(gpt2_bundle), pair_data(gpt2_bundle)
    one = data.subset([0])
    task = one.tasks[0]
    prompt = gpt2_bundle.tokenizer.decode(task.clean_ids)
    trace = run_trace(gpt2_bundle, prompt)
    answer, foil = (direct_logit_attribution(gpt2_bundle, trace, -1, t) for t in (task.answer_id, task.foil_id))
    effects = direct_effects(gpt2_bundle, graph, one)
    for node, component in (("m0", "L0 MLP"), ("m1", "L1 MLP"), ("a1.h0", "L1H0")):
        i = answer.labels.index(component)
        assert effects.of(node)[0] == pytest.approx(float(answer.values[i] - foil.values[i]), abs=1e-4)


def test_the_metrics_and_promoted_tokens_of_a_node(gpt2_bundle):
    graph, data = build_graph(gpt2_bundle), pair_data(gpt2_bundle)
    effects = direct_effects(gpt2_bundle, graph, data)
    clean, corrupt, share = node_effect_metrics(effects, "m1")
    assert float(clean.value) == pytest.approx(effects.of("m1")[0], abs=1e-3)
    gap = effects.metric[0] - effects.metric[1]
    assert float(share.value.rstrip("%")) / 100 == pytest.approx((effects.of("m1")[0] - effects.of("m1")[1]) / gap,
                                                                 abs=1e-3)
    tokens = promoted_tokens(gpt2_bundle, effects, "m1", k=3)
    values = [v for _, v in tokens.promoted] + [v for _, v in tokens.suppressed]
    assert values[0] >= values[1] >= values[2] > values[3] and values[3] <= values[4] <= values[5]
    assert len(tokens.to_frame()) == 6


@pytest.fixture(scope="module")
def organism():
    bundle = shipped_bundle()
    return bundle, build_graph(bundle)


def _circuit(bundle, graph, data, n_edges: int = 48):
    """EAP-IG's top `n_edges` (a tenth of the organism's graph) and the names of its edges."""
    circuit = top_edges(edge_scores(bundle, graph, data, method="eap_ig", steps=5), n_edges)
    names = graph.edge_names()
    kept = {names[i] for i, (s, r) in enumerate(graph.edge_index.tolist()) if circuit[s, r]}
    return circuit, kept


def test_the_induction_circuit_is_the_planted_previous_token_head_and_the_layer_1_induction_heads(organism):
    """L0H0 was seeded as a previous-token head; L1H1 and L1H2 score 0.90 and 0.86 as induction heads. Their
    circuit: L0H0's output reaches the induction heads' keys (through m0: K-composition), and they write the
    answer (positive direct effects, most of the layer's)."""
    bundle, graph = organism
    data = induction_pairs(bundle, n=32)
    circuit, kept = _circuit(bundle, graph, data)
    assert {"a0.h0", "a1.h1", "a1.h2"} <= set(circuit_nodes(graph, circuit))
    assert any(edge in kept for edge in ("m0->a1.h1<k>", "m0->a1.h2<k>", "a0.h0->a1.h1<k>", "a0.h0->a1.h2<k>"))
    effects = direct_effects(bundle, graph, data)
    layer_1 = {h: effects.of(f"a1.h{h}")[0] - effects.of(f"a1.h{h}")[1] for h in range(bundle.n_heads)}
    assert min(layer_1[1], layer_1[2]) > 1.0 and layer_1[1] + layer_1[2] > 0.8 * sum(map(abs, layer_1.values()))


def test_the_capital_circuit_moves_the_country_with_the_previous_token_head_and_recalls_it_in_mlps(organism):
    """"The capital of France is": the country is the token before the last, so the seeded previous-token head
    L0H0 carries it to the last position (its value input is the circuit's strongest edge), and MLPs write the
    capital (factual recall in MLPs, as Meng et al. 2022 found in GPT models)."""
    bundle, graph = organism
    data = capital_pairs(bundle, n=32)
    scores = edge_scores(bundle, graph, data, method="eap_ig", steps=5)
    names, values = graph.edge_names(), scores.edge_values().abs()
    assert names[int(values.argmax())] == "input->a0.h0<v>"
    effects = direct_effects(bundle, graph, data)
    differences = effects.clean - effects.corrupt
    mlps = torch.tensor([node.kind == "mlp" for node in graph.senders])
    assert float(differences[mlps].sum()) > 0.8 * (effects.metric[0] - effects.metric[1])
