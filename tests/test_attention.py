"""Attention analyses and charts: head scores on patterns with a known answer, pattern frames, the coloured-token
HTML (escaping included), and the head grid's click selection."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import all_patterns

from interp_core.attention import attention_pattern, default_window, head_summaries, summarise_heads
from interp_core.charts import selected_point
from interp_core.charts.attention import HEAD_PICK, attention_heatmap, head_grid
from interp_core.charts.tokens import coloured_tokens_html, markdown_escape
from interp_core.tokens import token_labels
from interp_core.trace import run_trace

N = 7  # positions of the hand-made patterns


def as_stack(pattern: torch.Tensor) -> torch.Tensor:
    """[query_pos, key_pos] -> [layer=1, head=1, query_pos, key_pos]."""
    return pattern[None, None]


def previous_token_pattern(n: int = N) -> torch.Tensor:
    a = torch.zeros(n, n)
    a[0, 0] = 1.0  # the first token can only attend to itself
    a[torch.arange(1, n), torch.arange(0, n - 1)] = 1.0
    return a


def uniform_causal_pattern(n: int = N) -> torch.Tensor:
    a = torch.tril(torch.ones(n, n))
    return a / a.sum(-1, keepdim=True)


def test_pure_previous_token_pattern_scores_one():
    s = summarise_heads(as_stack(previous_token_pattern()))
    assert s.prev_token.item() == pytest.approx(1.0)
    assert s.self_score.item() == pytest.approx(0.0)
    assert s.entropy.item() == pytest.approx(0.0, abs=1e-6)
    assert s.first_token.item() == pytest.approx(1 / (N - 1))  # only query 1 has position 0 as previous token


def test_pure_first_token_sink_scores_one():
    a = torch.zeros(N, N)
    a[:, 0] = 1.0
    s = summarise_heads(as_stack(a))
    assert s.first_token.item() == pytest.approx(1.0)
    assert s.prev_token.item() == pytest.approx(1 / (N - 1))  # query 1's previous token is position 0
    assert s.self_score.item() == pytest.approx(0.0)


def test_pure_self_attention_scores_one():
    s = summarise_heads(as_stack(torch.eye(N)))
    assert s.self_score.item() == pytest.approx(1.0)
    assert s.prev_token.item() == pytest.approx(0.0)
    assert s.first_token.item() == pytest.approx(0.0)


def test_uniform_causal_pattern_has_entropy_log_of_visible_keys():
    s = summarise_heads(as_stack(uniform_causal_pattern()))
    expected = sum(math.log(i + 1) for i in range(1, N)) / (N - 1)
    assert s.entropy.item() == pytest.approx(expected, rel=1e-5)
    assert s.first_token.item() == pytest.approx(sum(1 / (i + 1) for i in range(1, N)) / (N - 1), rel=1e-5)


def test_one_token_prompt_has_no_head_scores():
    s = summarise_heads(torch.ones(2, 3, 1, 1))
    assert torch.isnan(s.prev_token).all() and tuple(s.prev_token.shape) == (2, 3)


def test_head_scores_match_a_loop_over_the_real_trace(tiny_bundle):
    trace = run_trace(tiny_bundle, "When Mary and John went to the store, John gave")
    s = head_summaries(tiny_bundle, trace)
    a = all_patterns(tiny_bundle, trace)
    for layer in range(trace.n_layers):
        for head in range(trace.n_heads):
            rows = range(1, trace.n_pos)
            prev = sum(float(a[layer, head, i, i - 1]) for i in rows) / len(rows)
            first = sum(float(a[layer, head, i, 0]) for i in rows) / len(rows)
            ent = sum(-sum(float(p) * math.log(float(p)) for p in a[layer, head, i, : i + 1] if p > 0)
                      for i in rows) / len(rows)
            assert s.prev_token[layer, head].item() == pytest.approx(prev, abs=1e-5)
            assert s.first_token[layer, head].item() == pytest.approx(first, abs=1e-5)
            assert s.entropy[layer, head].item() == pytest.approx(ent, abs=1e-4)
    frame = s.to_frame()
    assert len(frame) == trace.n_layers * trace.n_heads
    assert list(frame.columns[:3]) == ["layer", "head", "head_label"]


def test_pattern_frame_leaves_the_masked_upper_triangle_blank(gpt2_bundle):
    trace = run_trace(gpt2_bundle, "The capital of France is")
    pattern = attention_pattern(gpt2_bundle, trace, 1, 2)
    frame = pattern.to_frame()
    n = trace.n_pos
    assert len(frame) == n * (n + 1) // 2
    assert (frame["key_pos"] <= frame["query_pos"]).all()
    assert frame.groupby("query_pos")["weight"].sum().tolist() == pytest.approx([1.0] * n, abs=1e-5)
    row = frame[(frame.query_pos == 3) & (frame.key_pos == 1)]
    assert row["weight"].item() == pytest.approx(float(all_patterns(gpt2_bundle, trace)[1, 2, 3, 1]))


def test_mean_pattern_is_the_mean_of_the_layers_heads(gpt2_bundle):
    trace = run_trace(gpt2_bundle, "The capital of France is")
    mean = attention_pattern(gpt2_bundle, trace, 0, None)
    assert torch.allclose(mean.weights, all_patterns(gpt2_bundle, trace)[0].mean(0))
    assert mean.title == "L0 mean of heads"


def test_window_frame_holds_only_window_positions(gpt2_bundle):
    trace = run_trace(gpt2_bundle, "The cat sat on the mat and the dog sat on the rug.")
    pattern = attention_pattern(gpt2_bundle, trace, 0, 0)
    start, stop = default_window(trace.n_pos, 5)
    assert (start, stop) == (trace.n_pos - 5, trace.n_pos)
    frame = pattern.to_frame(start, stop)
    assert frame["query_pos"].between(start, stop - 1).all() and frame["key_pos"].between(start, stop - 1).all()
    assert len(frame) == 5 * 6 // 2
    with pytest.raises(ValueError):
        pattern.to_frame(3, 2)


def test_attention_from_and_to_mask_the_causally_invisible_tokens(gpt2_bundle):
    trace = run_trace(gpt2_bundle, "The capital of France is")
    pattern = attention_pattern(gpt2_bundle, trace, 1, 0)
    row = pattern.attention_from(2)
    assert torch.isnan(row[3:]).all() and row[:3].sum().item() == pytest.approx(1.0, abs=1e-5)
    col = pattern.attention_to(2)
    assert torch.isnan(col[:2]).all() and torch.allclose(col[2:], all_patterns(gpt2_bundle, trace)[1, 0, 2:, 2])


def test_bad_layer_or_head_is_refused(gpt2_bundle):
    trace = run_trace(gpt2_bundle, "Hi there")
    with pytest.raises(ValueError):
        attention_pattern(gpt2_bundle, trace, trace.n_layers, 0)
    with pytest.raises(ValueError):
        attention_pattern(gpt2_bundle, trace, 0, trace.n_heads)


HOSTILE = ["<img src=x onerror=alert(1)>", ":red[x] **b** $x$", '"quoted" & \'single\'', "line↵"]


def test_coloured_tokens_html_escapes_token_text():
    html = coloured_tokens_html(HOSTILE, [0.1, 0.5, 0.9, 0.2], diverging=False, legend="<b>legend</b>")
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<b>" not in html and "&lt;b&gt;legend" in html
    assert "&quot;quoted&quot; &amp; &#x27;single&#x27;" in html
    assert html.count("<span") == len(HOSTILE)
    assert "<br/>" in html  # a newline token breaks the line


def test_coloured_tokens_shade_by_weight_and_sign():
    sequential = coloured_tokens_html(["a", "b", "c"], [0.0, 0.5, 1.0], diverging=False)
    assert "rgba(33, 102, 172, 0.000)" in sequential and "rgba(33, 102, 172, 1.000)" in sequential
    diverging = coloured_tokens_html(["a", "b"], [-2.0, 1.0], diverging=True)
    assert "rgba(178, 24, 43, 1.000)" in diverging  # the most negative is full red
    assert "rgba(33, 102, 172, 0.500)" in diverging  # half of the largest |weight| in blue
    masked = coloured_tokens_html(["a", "b"], torch.tensor([1.0, float("nan")]), diverging=False)
    assert "dashed" in masked and "n/a" in masked
    with pytest.raises(ValueError):
        coloured_tokens_html(["a"], [1.0, 2.0], diverging=False)


def test_markdown_escape_neutralises_directives_latex_and_emphasis():
    escaped = markdown_escape(":red[x] **b** $x$ <i>")
    assert escaped == r"\:red\[x\] \*\*b\*\* \$x\$ \<i\>"


def test_heatmap_axes_follow_prompt_order_with_unique_labels(gpt2_bundle):
    trace = run_trace(gpt2_bundle, "the the the cat")
    spec = attention_heatmap(attention_pattern(gpt2_bundle, trace, 0, 1)).to_dict()
    assert spec["encoding"]["x"]["sort"] == token_labels(trace.tokens)
    assert spec["encoding"]["y"]["sort"] == token_labels(trace.tokens)
    assert {t["field"] for t in spec["encoding"]["tooltip"]} == {"query_label", "key_label", "weight"}


def test_head_grid_click_selects_layer_and_head(gpt2_bundle):
    trace = run_trace(gpt2_bundle, "The capital of France is")
    spec = head_grid(head_summaries(gpt2_bundle, trace), "prev_token", selected=(1, 2)).to_dict()
    params = spec["params"]  # Altair lifts a layer's selection to the top level, bound to the rect view
    assert [p["name"] for p in params] == [HEAD_PICK]
    assert params[0]["select"]["fields"] == ["layer", "head"]
    assert params[0]["views"] == [spec["layer"][0]["name"]]  # on the coloured cells, not the text
    with pytest.raises(ValueError):
        head_grid(head_summaries(gpt2_bundle, trace), "no_such_metric")


def test_selected_point_reads_a_streamlit_selection_event():
    assert selected_point({"selection": {HEAD_PICK: [{"layer": 1, "head": 3}]}}, HEAD_PICK) == {"layer": 1, "head": 3}
    assert selected_point({"selection": {HEAD_PICK: []}}, HEAD_PICK) is None
    assert selected_point({"selection": {HEAD_PICK: {}}}, HEAD_PICK) is None
    assert selected_point(None, HEAD_PICK) is None


def test_a_chart_spec_is_built_once_per_result_and_equals_the_validated_chart(gpt2_bundle):
    import altair as alt
    import pyarrow as pa

    from interp_core.charts import chart_spec

    trace = run_trace(gpt2_bundle, "The capital of France is")
    summary = head_summaries(gpt2_bundle, trace)
    first = chart_spec(head_grid, summary, "prev_token", selected=(1, 2))
    assert chart_spec(head_grid, summary, "prev_token", selected=(1, 2)) is first  # no second build
    assert chart_spec(head_grid, summary, "entropy", selected=(1, 2)) is not first
    with alt.theme.enable("none"):
        validated = head_grid(summary, "prev_token", selected=(1, 2)).to_dict()  # validates: a valid spec
    assert {k: v for k, v in first.items() if k != "datasets"} == {k: v for k, v in validated.items()
                                                                   if k != "datasets"}
    assert all(isinstance(data, bytes) for data in first["datasets"].values())  # as Streamlit sends them
    decoded = {name: pa.ipc.open_stream(data).read_all().to_pylist() for name, data in first["datasets"].items()}
    assert decoded == validated["datasets"]
