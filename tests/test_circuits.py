"""Head detectors, the repeated-token generator, per-token loss and head ablation (interp_core.circuits)."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import hook_count, make_tiny_model, make_tiny_tokenizer
from shipped import shipped_bundle

from interp_core import activations
from interp_core.circuits import (
    DETECTORS,
    TRANSFORMER_LENS_NAMES,
    CircuitInputError,
    ablate_heads,
    attention_scores,
    copying_scores,
    head_z_means,
    prompt_head_scores,
    repeated,  # the module that reads the caps
    repeated_tokens,
    run_repeated,
)
from interp_core.loading import bundle_from_model
from interp_core.settings import Limits
from interp_core.trace import run_trace


def test_repeated_tokens_are_bos_then_two_equal_copies_of_distinct_non_special_tokens(tiny_bundle):
    seq = repeated_tokens(tiny_bundle, length=12, seed=3, n_sequences=5)
    assert seq.ids.shape == (5, 1 + 24)
    bos = tiny_bundle.tokenizer.bos_token_id
    bos = bos if bos is not None else tiny_bundle.tokenizer.eos_token_id
    assert (seq.ids[:, 0] == bos).all()
    first, second = seq.ids[:, 1:13], seq.ids[:, 13:]
    assert torch.equal(first, second)
    special = set(tiny_bundle.tokenizer.all_special_ids)
    for row in first:
        assert len(set(row.tolist())) == 12  # distinct within a copy: no accidental duplicates
        assert not special & set(row.tolist())


def test_repeated_tokens_are_reproducible_from_the_seed_and_change_with_it(gpt2_bundle):
    a = repeated_tokens(gpt2_bundle, 10, seed=7).ids
    assert torch.equal(a, repeated_tokens(gpt2_bundle, 10, seed=7).ids)
    assert not torch.equal(a, repeated_tokens(gpt2_bundle, 10, seed=8).ids)
    assert repeated_tokens(gpt2_bundle, 10, prepend_bos=False).ids.shape[1] == 20


def test_a_copy_too_long_for_the_cap_is_refused_with_the_caps_name(gpt2_bundle, monkeypatch):
    monkeypatch.setattr(repeated, "limits", lambda: Limits(max_prompt_tokens=21))
    repeated_tokens(gpt2_bundle, 10)  # 1 + 2 * 10 = 21 fits exactly
    with pytest.raises(CircuitInputError, match="max_prompt_tokens = 21"):
        repeated_tokens(gpt2_bundle, 11)


def _one_hot_heads(ids: torch.Tensor, n: int) -> torch.Tensor:
    """Attention [1, 1, 4, pos, pos] on [BOS] A A: head 0 previous-token, 1 induction, 2 duplicate, 3 first."""
    pos = ids.shape[-1]
    att = torch.zeros(1, 1, 4, pos, pos)
    for q in range(pos):
        second = q >= 1 + n
        att[0, 0, 0, q, max(q - 1, 0)] = 1
        att[0, 0, 1, q, q - n + 1 if second else q] = 1  # first copy: itself (nothing to match yet)
        att[0, 0, 2, q, q - n if second else q] = 1
        att[0, 0, 3, q, 0] = 1
    return att


def test_each_detector_scores_one_on_its_own_ideal_pattern_and_low_on_the_others():
    n = 5
    first = torch.arange(10, 10 + n)
    ids = torch.cat([torch.tensor([0]), first, first])[None]  # [1, pos]
    scores = attention_scores(_one_hot_heads(ids, n), ids)
    expected = {"previous": 0, "induction": 1, "duplicate": 2, "first": 3}
    for name, head in expected.items():
        row = scores[name][0]  # [head]
        assert row[head] == pytest.approx(1.0), name
        others = [float(row[h]) for h in range(4) if h != head]
        assert max(others) < 0.5, (name, others)
    # the induction head never looks at the duplicate, nor the duplicate head at the next token
    assert scores["duplicate"][0, 1] == 0 and scores["induction"][0, 2] == 0


def test_induction_and_duplicate_are_nan_when_no_token_repeats():
    ids = torch.arange(6)[None]
    att = torch.tril(torch.ones(6, 6))
    att = (att / att.sum(-1, keepdim=True))[None, None, None]  # uniform causal attention [1, 1, 1, 6, 6]
    scores = attention_scores(att, ids)
    assert torch.isnan(scores["induction"]).all() and torch.isnan(scores["duplicate"]).all()
    assert scores["first"][0, 0] == pytest.approx(sum(1 / (q + 1) for q in range(1, 6)) / 5)


def test_detector_scores_equal_the_offset_definitions_on_repeated_tokens(tiny_bundle):
    run = run_repeated(tiny_bundle, length=9, seed=1, n_sequences=2)
    n, prefix = 9, 1
    queries = torch.arange(prefix + n, prefix + 2 * n)  # the second copy
    att = run.attention  # sequence 0, [layer, head, q, k]
    seq0 = attention_scores(att[None], run.sequences.ids[:1])
    assert torch.allclose(seq0["induction"], att[:, :, queries, queries - n + 1].mean(-1), atol=1e-6)
    assert torch.allclose(seq0["duplicate"], att[:, :, queries, queries - n].mean(-1), atol=1e-6)
    assert run.scores.scores.shape == (len(DETECTORS), tiny_bundle.n_layers, tiny_bundle.n_heads)
    shares = run.scores.scores[:-1]  # every detector but ov_copying is a share of attention
    assert run.scores.detectors[-1] == "ov_copying"
    assert ((shares >= 0) & (shares <= 1 + 1e-6)).all()
    assert (run.scores.score("ov_copying").abs() <= 1 + 1e-6).all()  # an eigenvalue balance in [-1, 1]


def test_per_token_loss_lines_up_with_the_models_own_loss(gpt2_bundle):
    run = run_repeated(gpt2_bundle, length=8, seed=2, n_sequences=3)
    ids = run.sequences.ids
    with torch.no_grad():
        reference = gpt2_bundle.model(input_ids=ids, labels=ids).loss
    assert run.loss.mean() == pytest.approx(float(reference), rel=1e-5)
    frame = run.loss_frame()
    assert len(frame) == ids.shape[1] - 1
    assert frame.groupby("copy")["loss"].mean()["second copy"] == pytest.approx(run.copy_loss(2), rel=1e-5)


def test_prompt_scores_come_from_the_trace_without_a_forward(gpt2_bundle, monkeypatch):
    trace = run_trace(gpt2_bundle, "The cat sat on the mat and the cat sat")

    def no_forward(*args, **kwargs):
        raise AssertionError("prompt_head_scores ran the model")

    monkeypatch.setattr(gpt2_bundle.model, "forward", no_forward)
    scores = prompt_head_scores(gpt2_bundle, trace)
    assert not torch.isnan(scores.score("induction")).any()  # "cat sat" repeats
    frame = scores.to_frame()
    assert set(frame["detector"]) == set(DETECTORS)
    assert len(frame) == len(DETECTORS) * gpt2_bundle.n_layers * gpt2_bundle.n_heads
    wide = scores.wide_frame()  # one row per head, NaN kept, values in the same places
    assert len(wide) == gpt2_bundle.n_layers * gpt2_bundle.n_heads
    row = wide[(wide["layer"] == 1) & (wide["head"] == 2)].iloc[0]
    assert row["head_label"] == "L1H2" and row["previous"] == pytest.approx(float(scores.score("previous")[1, 2]))


def test_copying_score_is_one_when_the_output_writes_the_attended_token_and_zero_for_its_opposite():
    """One head with d_head = d_model, so W_O is invertible and we can choose the head's output exactly.

    Each query attends (one-hot) to a key and the head writes +W_U[token of that key] (copying) or -W_U[...]
    (anti-copying). The direct logit effect of +w on the context tokens is largest for the token itself
    (its own squared norm beats random cross terms), and smallest for -w."""
    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model("gpt2", vocab_size=len(tokenizer), n_head=1)
    with torch.no_grad():
        model.transformer.ln_f.weight.fill_(1.0)
    bundle = bundle_from_model(model, tokenizer, "tiny-one-head")
    ids = torch.tensor([[5, 17, 40, 63, 17, 90, 40, 5]])  # [1, pos]
    pos = ids.shape[1]
    keys = torch.tensor([0, 0, 1, 2, 1, 3, 2, 0])  # an earlier key for every query
    att = torch.zeros(1, bundle.n_layers, 1, pos, pos)
    att[0, :, 0, torch.arange(pos), keys] = 1.0
    w_u = bundle.adapter.unembed_weight(model).detach()  # [d_vocab, d_model]
    for sign, expected in ((1.0, 1.0), (-1.0, 0.0)):
        out = sign * w_u[ids[0, keys]]  # [pos, d_model] what the head should write at each query
        z = torch.stack([torch.linalg.solve(bundle.adapter.W_O(model, layer).detach()[0].T, out.T).T
                         for layer in range(bundle.n_layers)])  # [layer, pos, d_head] with z @ W_O = out
        z = z[None, :, :, None, :]  # [batch, layer, pos, head, d_head]
        score = copying_scores(bundle, att, z, ids)[0, 0]
        assert float(score) == pytest.approx(expected)


def _without_head(bundle, layer: int, head: int):
    """A copy of the tiny GPT-2 whose output projection ignores one head (its rows of c_proj set to zero)."""
    model = copy.deepcopy(bundle.model)
    d = bundle.d_head
    with torch.no_grad():
        model.transformer.h[layer].attn.c_proj.weight[head * d:(head + 1) * d] = 0
    return model


def test_zero_ablation_equals_deleting_the_heads_slice_of_W_O(gpt2_bundle):
    ids = torch.tensor(gpt2_bundle.tokenizer("When Mary and John went to the store")["input_ids"])
    result = ablate_heads(gpt2_bundle, ids, [(1, 2)], "zero", answer_id=5, foil_id=9)
    with torch.no_grad():
        logits = _without_head(gpt2_bundle, 1, 2)(input_ids=ids[None]).logits[0, -1]
    assert result.logit_diff_after == pytest.approx(float(logits[5] - logits[9]), abs=1e-5)
    assert result.logit_diff_after != pytest.approx(result.logit_diff_before, abs=1e-6)
    assert result.top_probs_after[0] == pytest.approx(float(logits.softmax(-1).max()), abs=1e-6)


def test_mean_ablation_against_a_one_token_reference_is_a_no_op(gpt2_bundle):
    """The mean of a head's z over a one-token prompt is that z, so mean ablation changes nothing there."""
    ids = torch.tensor([7])
    result = ablate_heads(gpt2_bundle, ids, [(0, 0), (1, 3)], "mean", answer_id=5, foil_id=9)
    assert result.logit_diff_after == pytest.approx(result.logit_diff_before, abs=1e-5)


def test_mean_ablation_averages_z_over_positions_1_onwards_leaving_out_the_sink_at_position_0(gpt2_bundle):
    """At position 0 a query can attend only to itself, so its z is its own value vector, unlike every later mix
    (the attention sink). Mean ablation used to average it in (issue 17); now it is left out by default."""
    bundle, name = gpt2_bundle, "blocks.1.attn.hook_z"
    ids = torch.tensor(bundle.tokenizer("When Mary and John went to the store")["input_ids"])
    other = torch.tensor(bundle.tokenizer("Then Anna gave a book to")["input_ids"])
    with torch.no_grad():
        z, z_other = (activations.run(bundle, x[None], record=[name]).acts[name][0] for x in (ids, other))
    means = head_z_means(bundle, ids[None])  # [layer, head, d_head]
    torch.testing.assert_close(means[1], z[1:].mean(0), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(means[1], z.mean(0), atol=1e-3)  # position 0 would have moved the mean
    torch.testing.assert_close(head_z_means(bundle, ids[None], exclude_pos0=False)[1], z.mean(0), atol=1e-6,
                               rtol=1e-5)
    # ablate_heads with two references: the mean over both prompts' positions 1 onwards, by position
    result = ablate_heads(bundle, ids, [(1, 2)], "mean", reference_ids=(ids, other), answer_id=5, foil_id=9)
    mean = torch.cat([z[1:, 2], z_other[1:, 2]]).mean(0)  # [d_head]
    with torch.no_grad():
        logits = activations.run(bundle, ids[None], edits={f"{name}[2]": activations.replace(mean)}).logits[0, -1]
    assert result.logit_diff_after == pytest.approx(float(logits[5] - logits[9]), abs=1e-5)


def _transformer_lens_patterns(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """TransformerLens' detection patterns [query_pos, key_pos] for ids [pos], built as
    transformer_lens/head_detector.py builds them (get_*_head_detection_pattern)."""
    n = len(ids)
    previous = torch.zeros(n, n)
    previous[1:, :-1] = torch.eye(n - 1)
    duplicate = (ids[:, None] == ids[None, :]).float()
    duplicate.fill_diagonal_(0)
    duplicate = duplicate.tril()
    induction = torch.cat([torch.zeros(n, 1), torch.roll(duplicate, shifts=1, dims=1)[:, 1:]], dim=1).tril()
    return {"previous": previous.tril(), "duplicate": duplicate, "induction": induction}


def _transformer_lens_score(attention: torch.Tensor, pattern: torch.Tensor) -> float:
    """compute_head_attention_similarity_score with error_measure="mul" (its default): sum(A * D) / sum(A), so
    divided by every query row (each row of A sums to 1)."""
    return float((attention * pattern).sum() / attention.sum())


def test_detector_scores_are_transformer_lens_scores_times_all_query_rows_over_the_qualifying_ones(tiny_bundle):
    run = run_repeated(tiny_bundle, length=9, seed=1, n_sequences=1)  # [BOS] A A, n = 9: 19 query rows
    ids = run.sequences.ids[0]
    patterns = _transformer_lens_patterns(ids)
    for detector in TRANSFORMER_LENS_NAMES:
        qualifying, total = run.scores.query_rows[detector]
        assert total == len(ids) and run.scores.transformer_lens_factor(detector) == pytest.approx(qualifying / total)
        for layer in range(tiny_bundle.n_layers):
            for head in range(tiny_bundle.n_heads):
                theirs = _transformer_lens_score(run.attention[layer, head].double(), patterns[detector].double())
                ours = float(run.scores.score(detector)[layer, head])
                assert ours == pytest.approx(theirs * total / qualifying, abs=1e-5), (detector, layer, head)
    assert run.scores.query_rows["induction"] == (9, 19)  # the second copy's queries: theirs = ours x n / (2n + 1)
    caption = run.scores.caption("induction")
    assert "TransformerLens' head_detector" in caption and "all 19 query rows" in caption and "0.47x" in caption
    assert run.scores.transformer_lens_factor("first") is None and "TransformerLens" not in run.scores.caption("first")


def test_the_transformer_lens_patterns_and_score_above_are_its_own():
    head_detector = pytest.importorskip("transformer_lens.head_detector")  # requirements-bench.txt installs it
    ids = torch.tensor([[0, 11, 12, 13, 14, 11, 12, 13, 12]])  # [1, pos] with a repeat and a broken repeat
    attention = torch.rand(9, 9, generator=torch.Generator().manual_seed(0)).tril()
    attention = attention / attention.sum(-1, keepdim=True)  # causal, rows sum to 1
    for detector, name in TRANSFORMER_LENS_NAMES.items():
        pattern = getattr(head_detector, f"get_{name}_detection_pattern")(ids)
        assert torch.equal(pattern, _transformer_lens_patterns(ids[0])[detector]), detector
        theirs = head_detector.compute_head_attention_similarity_score(
            attention, pattern, exclude_bos=False, exclude_current_token=False, error_measure="mul")
        assert theirs == pytest.approx(_transformer_lens_score(attention, pattern), abs=1e-6)


def test_a_prompt_without_repeats_or_with_one_token_says_why_its_scores_are_undefined(gpt2_bundle):
    scores = prompt_head_scores(gpt2_bundle, run_trace(gpt2_bundle, "The cat sat on a mat"))
    assert "No token occurs twice in the prompt" in scores.note("induction") and scores.note("previous") is None
    one = prompt_head_scores(gpt2_bundle, run_trace(gpt2_bundle, "a"))
    assert "at least two tokens" in one.note("previous") and one.note("ov_copying") is None  # weights only


def test_ablation_leaves_no_hooks_and_rejects_unknown_heads(tiny_bundle):
    before = hook_count(tiny_bundle.model)
    run = run_repeated(tiny_bundle, length=6, n_sequences=2, ablate=[(0, 1)], mode="mean")
    assert run.ablated == ((0, 1),) and "mean-ablated L0H1" in run.ablation_label
    assert hook_count(tiny_bundle.model) == before
    with pytest.raises(CircuitInputError, match="no head L9H0"):
        run_repeated(tiny_bundle, length=6, ablate=[(9, 0)])


def test_top_heads_are_sorted_and_respect_the_minimum(gpt2_bundle):
    scores = run_repeated(gpt2_bundle, length=8, n_sequences=2).scores
    top = scores.top_heads("previous", k=3)
    values = [float(scores.score("previous")[layer, head]) for layer, head in top]
    assert values == sorted(values, reverse=True) and len(top) == 3
    assert scores.top_heads("previous", k=3, min_score=2.0) == []


# -- known truths on the shipped model organism -----------------------------------------------------------


def test_shipped_model_has_induction_heads_after_layer_0_and_none_in_layer_0():
    bundle = shipped_bundle()
    run = run_repeated(bundle, length=30, seed=0)
    induction = run.scores.score("induction")  # [layer, head]
    assert float(induction[1:].max()) >= 0.5, induction
    assert float(induction[0].max()) < 0.5, induction
    assert run.copy_loss(2) < 0.5 * run.copy_loss(1)  # the second copy is predicted from the first


def test_ablating_the_top_induction_heads_multiplies_the_second_copy_loss():
    bundle = shipped_bundle()
    intact = run_repeated(bundle, length=30, seed=1)
    top = intact.scores.top_heads("induction", k=2, min_score=0.3)
    assert top and all(layer >= 1 for layer, _ in top)
    ablated = run_repeated(bundle, length=30, seed=1, ablate=top, mode="zero")
    assert ablated.copy_loss(2) > 3 * intact.copy_loss(2), (intact.copy_loss(2), ablated.copy_loss(2))
    assert ablated.copy_loss(1) < 1.5 * intact.copy_loss(1)  # the first copy was never helped by them


def test_charts_have_one_cell_per_head_and_one_per_query_key_pair(gpt2_bundle):
    from interp_core.charts.circuits import copy_loss_chart, detector_grid, repeated_pattern_heatmap

    run = run_repeated(gpt2_bundle, length=6, n_sequences=2)
    grid = detector_grid(run.scores, "induction", selected=(1, 2)).to_dict()
    rows = next(iter(grid["datasets"].values()))
    assert len(rows) == gpt2_bundle.n_layers * gpt2_bundle.n_heads
    assert sum(row["selected"] for row in rows) == 1
    pattern = repeated_pattern_heatmap(run, 1, 2).to_dict()
    n = run.sequences.n_pos
    assert len(next(iter(pattern["datasets"].values()))) == n * (n + 1) // 2  # causal triangle only
    loss = copy_loss_chart(run, run_repeated(gpt2_bundle, length=6, n_sequences=2, ablate=[(1, 2)])).to_dict()
    assert len(next(iter(loss["datasets"].values()))) == 2 * (n - 1)
    lines = loss["encoding"]["color"]["scale"]
    assert len(lines["domain"]) == len(set(lines["range"])) == 4  # a legend entry and colour per copy and run
