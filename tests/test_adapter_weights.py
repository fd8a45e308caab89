"""The adapters' per-head weights rebuild each family's forward pass, and the OV copying score they allow.

For every family a layer's attention pattern, per-head values, z, head outputs and MLP output are recomputed
from the block input with adapter weights only (plus the model's own norm and rotary modules) and compared with
what the model computes. Hooks here are temporary, on a private forward, and always removed.
"""

from __future__ import annotations

import pytest
import torch
from helpers import make_tiny_model, make_tiny_tokenizer
from shipped import shipped_bundle
from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb as neox_rotary
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_rotary

from interp_core.circuits import DETECTORS, attention_scores, ov_copying_scores, repeated_tokens
from interp_core.loading import bundle_from_model

ATOL = 1e-5
PROMPT = "When Mary and John went to the store, John gave a drink to Mary."
ROTARY = {"gpt_neox": neox_rotary, "llama": llama_rotary}


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0, msg=lambda m: f"{what}: {m}")


def _own_forward(bundle, ids: torch.Tensor, layer: int) -> dict:
    """The model's own activations at `layer`: block input, z, attention output, MLP input and output, the
    q/k/v projection outputs and the attention weights (temporary hooks, removed in `finally`)."""
    adapter, model = bundle.adapter, bundle.model
    block = adapter.blocks(model)[layer]
    seen: dict = {}

    def pre(name):
        def hook(module, args, kwargs):
            seen[name] = (args[0] if args else kwargs["hidden_states"]).detach()
        return hook

    def post(name):
        def hook(module, args, output):
            seen[name] = (output[0] if isinstance(output, tuple) else output).detach()
        return hook

    projections = adapter.qkv_projections(block)
    projections = (projections,) if isinstance(projections, torch.nn.Module) else projections
    handles = [
        block.register_forward_pre_hook(pre("block_in"), with_kwargs=True),
        adapter.attn_out_proj(block).register_forward_pre_hook(pre("z"), with_kwargs=True),
        adapter.mlp(block).register_forward_pre_hook(pre("mlp_in"), with_kwargs=True),
        adapter.mlp_out_proj(block).register_forward_pre_hook(pre("post"), with_kwargs=True),
        adapter.attention(block).register_forward_hook(post("attn_out")),
        adapter.mlp(block).register_forward_hook(post("mlp_out")),
        *(m.register_forward_hook(post(f"qkv{i}")) for i, m in enumerate(projections)),
    ]
    try:
        with bundle.lock, torch.no_grad():
            out = model(input_ids=ids, output_attentions=True, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    seen["pattern"] = out.attentions[layer].detach()  # [batch, head, query_pos, key_pos]
    seen["qkv"] = seen["qkv0"] if len(projections) == 1 else tuple(seen[f"qkv{i}"] for i in range(3))
    return seen


def _ids(bundle) -> torch.Tensor:
    return torch.tensor([bundle.tokenizer(PROMPT)["input_ids"]])  # [batch=1, pos]


@pytest.mark.parametrize("layer", [0, 1])
def test_adapter_weights_rebuild_the_forward(tiny_bundle, layer):
    adapter, model, family = tiny_bundle.adapter, tiny_bundle.model, tiny_bundle.family
    ids = _ids(tiny_bundle)
    own = _own_forward(tiny_bundle, ids, layer)
    block = adapter.blocks(model)[layer]
    n_heads, n_kv = adapter.n_heads(model), adapter.n_kv_heads(model)
    n_pos = ids.shape[1]
    with torch.no_grad():
        x = adapter.attn_norm(block)(own["block_in"])[0]  # [pos, d_model]
        q = torch.einsum("pm,hmd->hpd", x, adapter.W_Q(model, layer)) + adapter.b_Q(model, layer)[:, None]
        k = torch.einsum("pm,hmd->hpd", x, adapter.W_K(model, layer)) + adapter.b_K(model, layer)[:, None]
        v = torch.einsum("pm,hmd->hpd", x, adapter.W_V(model, layer)) + adapter.b_V(model, layer)[:, None]
        assert k.shape[0] == v.shape[0] == n_kv

        # per-head values, as the attention module sees them (before any repeat for GQA)
        own_q, own_k, own_v = adapter.split_qkv(model, own["qkv"])  # each [batch, pos, n, d_head]
        _close(v, own_v[0].transpose(0, 1), "per-head values v")
        _close(q, own_q[0].transpose(0, 1), "q before rotary")
        _close(k, own_k[0].transpose(0, 1), "k before rotary")

        rotary = adapter.rotary_embedding(model)
        if rotary is not None:  # the model's own rotary module and the family's apply_rotary_pos_emb
            cos, sin = rotary(x[None], torch.arange(n_pos)[None])
            q, k = ROTARY[family](q[None], k[None], cos, sin)
            q, k = q[0], k[0]
        group = n_heads // n_kv  # GQA: query head h reads kv head h // group
        k_per_q, v_per_q = k.repeat_interleave(group, dim=0), v.repeat_interleave(group, dim=0)
        attn = adapter.attention(block)
        scaling = getattr(attn, "scaling", q.shape[-1] ** -0.5)
        scores = q @ k_per_q.transpose(-1, -2) * scaling  # [head, query_pos, key_pos]
        causal = torch.ones(n_pos, n_pos, dtype=torch.bool).tril()
        pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        _close(pattern, own["pattern"][0], "attention pattern")

        z = pattern @ v_per_q  # [head, pos, d_head]
        _close(z.transpose(0, 1).flatten(-2), own["z"][0], "z")
        head_out = torch.einsum("hpd,hdm->hpm", z, adapter.W_O(model, layer))  # [head, pos, d_model]
        _close(head_out.sum(0) + adapter.b_O(model, layer), own["attn_out"][0], "attention output")

        # MLP: its norm on the right residual, then W_in / W_gate / act / W_out
        mlp_resid = own["block_in"] if adapter.parallel_residual(model) else own["block_in"] + own["attn_out"]
        mlp_in = adapter.mlp_norm(block)(mlp_resid)[0]  # [pos, d_model]
        _close(mlp_in, own["mlp_in"][0], "MLP input")
        act = adapter.neuron_activation(block)
        pre_act = mlp_in @ adapter.W_in(model, layer) + adapter.b_in(model, layer)  # [pos, d_mlp]
        gate = adapter.W_gate(model, layer)
        if gate is None:
            post = act(pre_act)
        else:
            post = act(mlp_in @ gate + adapter.b_gate(model, layer)) * pre_act
        _close(post, own["post"][0], "neuron activations (hook_post)")
        _close(post @ adapter.W_out(model, layer) + adapter.b_out(model, layer), own["mlp_out"][0], "MLP output")


def test_weight_shapes_follow_transformerlens_layouts(tiny_bundle):
    adapter, model = tiny_bundle.adapter, tiny_bundle.model
    n, d_model, d_head = tiny_bundle.n_heads, tiny_bundle.d_model, tiny_bundle.d_head
    n_kv = adapter.n_kv_heads(model)
    d_mlp = model.config.intermediate_size if hasattr(model.config, "intermediate_size") else model.config.n_inner
    if tiny_bundle.family == "llama":
        assert n_kv < n, "the tiny Llama must use grouped-query attention"
    else:
        assert n_kv == n
    expected = {
        "W_Q": (n, d_model, d_head), "W_K": (n_kv, d_model, d_head), "W_V": (n_kv, d_model, d_head),
        "b_Q": (n, d_head), "b_K": (n_kv, d_head), "b_V": (n_kv, d_head),
        "W_O": (n, d_head, d_model), "b_O": (d_model,),
        "W_in": (d_model, d_mlp), "b_in": (d_mlp,), "W_out": (d_mlp, d_model), "b_out": (d_model,),
    }
    for layer in range(tiny_bundle.n_layers):
        for name, shape in expected.items():
            assert tuple(getattr(adapter, name)(model, layer).shape) == shape, name
        gate = adapter.W_gate(model, layer)
        if tiny_bundle.family == "llama":
            assert tuple(gate.shape) == (d_model, d_mlp)
            assert tuple(adapter.b_gate(model, layer).shape) == (d_mlp,)
        else:
            assert gate is None and adapter.b_gate(model, layer) is None
    block = adapter.blocks(model)[0]
    assert callable(adapter.neuron_activation(block))
    assert (adapter.rotary_embedding(model) is None) == (tiny_bundle.family == "gpt2")


# -- OV copying score -----------------------------------------------------------------------------------------


def _set_head_ov(model, family: str, layer: int, head: int, kv: int, w_v: torch.Tensor, w_o: torch.Tensor):
    """Write W_V[kv] = w_v [d_model, d_head] and W_O[head] = w_o [d_head, d_model] into the model's own
    parameters, layout by layout (independently of the adapter, which must read them back)."""
    d_head = w_v.shape[1]
    rows = slice(head * d_head, (head + 1) * d_head)
    with torch.no_grad():
        if family == "gpt2":
            attn = model.transformer.h[layer].attn  # Conv1D weights [in, out]; c_attn out = q | k | v
            d_model = attn.c_attn.weight.shape[0]
            attn.c_attn.weight[:, 2 * d_model + kv * d_head: 2 * d_model + (kv + 1) * d_head] = w_v
            attn.c_proj.weight[rows] = w_o
        elif family == "gpt_neox":
            attn = model.gpt_neox.layers[layer].attention  # per head q | k | v rows of the fused Linear
            start = kv * 3 * d_head + 2 * d_head
            attn.query_key_value.weight[start: start + d_head] = w_v.T
            attn.dense.weight[:, rows] = w_o.T
        else:
            attn = model.model.layers[layer].self_attn
            attn.v_proj.weight[kv * d_head: (kv + 1) * d_head] = w_v.T
            attn.o_proj.weight[:, rows] = w_o.T


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_ov_copying_score_is_plus_one_for_an_identity_ov_circuit(family, sign):
    """A tiny model with d_vocab = d_head = 8, trivial norms and centred embeddings, where one head's
    W_E W_V W_O W_U is exactly sign * 3 * identity on the tokens: its score is sign * 1."""
    d_vocab, layer, head = 8, 1, 2  # Llama: kv head 2 // 2 = 1 (not 2 % 2)
    model = make_tiny_model(family, vocab_size=d_vocab)
    bundle = bundle_from_model(model, make_tiny_tokenizer(), f"tiny-{family}-ov")
    adapter = bundle.adapter
    n_kv = adapter.n_kv_heads(model)
    kv = head // (bundle.n_heads // n_kv)
    with torch.no_grad():  # the score folds the norms: make them the identity
        for module in (adapter.attn_norm(adapter.blocks(model)[layer]), adapter.final_norm(model)):
            module.weight.fill_(1.0)
        for weight in (adapter.token_embedding(model).weight, adapter.unembed_weight(model)):
            weight -= weight.mean(dim=-1, keepdim=True)  # LayerNorm centring then changes nothing
    w_e = adapter.token_embedding(model).weight.detach().double()  # [d_vocab, d_model]
    w_u = adapter.unembed_weight(model).detach().double().T  # [d_model, d_vocab]
    w_v = torch.linalg.pinv(w_e)  # [d_model, d_vocab = d_head]: W_E W_V = I
    w_o = 3.0 * sign * torch.linalg.pinv(w_u)  # [d_head, d_model]: W_O W_U = 3 sign I
    _set_head_ov(model, family, layer, head, kv, w_v.float(), w_o.float())
    torch.testing.assert_close(adapter.W_V(model, layer)[kv], w_v.float())
    torch.testing.assert_close(adapter.W_O(model, layer)[head], w_o.float())
    full = w_e @ adapter.W_V(model, layer)[kv].double() @ adapter.W_O(model, layer)[head].double() @ w_u
    torch.testing.assert_close(full, 3.0 * sign * torch.eye(d_vocab, dtype=torch.float64), atol=1e-4, rtol=0)
    scores = ov_copying_scores(bundle)
    assert scores.shape == (bundle.n_layers, bundle.n_heads)
    assert float(scores[layer, head]) == pytest.approx(sign, abs=1e-4)
    assert scores.abs().max() <= 1 + 1e-6


def _folded(norm) -> torch.Tensor:
    """The linear part of a norm as a [d_model, d_model] matrix: centring (LayerNorm) then the gain."""
    d = norm.weight.shape[0]
    centre = torch.eye(d, dtype=torch.float64)
    if isinstance(norm, torch.nn.LayerNorm):
        centre = centre - 1.0 / d
    return centre @ torch.diag(norm.weight.detach().double())


def test_ov_copying_score_matches_the_full_vocabulary_eigenvalues(tiny_bundle):
    """The [d_head, d_head] shortcut gives what the eigenvalues of the full [d_vocab, d_vocab] OV circuit give,
    with the norms folded in as the docstring of ov_copying_scores says."""
    adapter, model = tiny_bundle.adapter, tiny_bundle.model
    scores = ov_copying_scores(tiny_bundle)
    w_e = adapter.token_embedding(model).weight.detach().double()
    w_u = _folded(adapter.final_norm(model)) @ adapter.unembed_weight(model).detach().double().T
    group = tiny_bundle.n_heads // adapter.n_kv_heads(model)
    for layer in range(tiny_bundle.n_layers):
        ln = _folded(adapter.attn_norm(adapter.blocks(model)[layer]))
        for head in range(tiny_bundle.n_heads):
            w_v = adapter.W_V(model, layer)[head // group].double()
            w_o = adapter.W_O(model, layer)[head].double()
            eig = torch.linalg.eigvals(w_e @ ln @ w_v @ w_o @ w_u)  # [d_vocab], all but d_head of them ~0
            expected = eig.sum().real / eig.abs().sum()
            assert float(scores[layer, head]) == pytest.approx(float(expected), abs=1e-3), (layer, head)


def test_ov_copying_is_a_detector_beside_the_direct_effect_proxy():
    assert "ov_copying" in DETECTORS and "copying" in DETECTORS
    assert "direct-effect proxy" in DETECTORS["copying"]


def test_organism_induction_heads_copy_by_their_weights():
    """Measured on the shipped organism: L1H1 and L1H2 are its induction heads (induction 0.89 and 0.92) and
    their OV copying scores are 0.90 and 0.86; the other layer-1 heads 0.23 and -0.03."""
    bundle = shipped_bundle()
    scores = ov_copying_scores(bundle)
    assert scores.shape == (bundle.n_layers, bundle.n_heads)
    assert float(scores[1].max()) > 0.6, scores
    sequences = repeated_tokens(bundle)
    with bundle.lock, torch.no_grad():
        out = bundle.model(input_ids=sequences.ids, attention_mask=torch.ones_like(sequences.ids),
                           output_attentions=True, use_cache=False)
    induction = attention_scores(torch.stack(out.attentions, dim=1), sequences.ids)["induction"]
    best = divmod(int(induction.argmax()), bundle.n_heads)
    assert best[0] == 1 and float(induction[best]) > 0.5, induction
    assert float(scores[best]) > 0.6, (best, scores)
