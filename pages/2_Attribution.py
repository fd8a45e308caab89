"""Attribution page: how much each prompt token matters for a chosen next token (integrated gradients, saliency,
input x gradient, occlusion), a continuation attributed step by step, and how far to trust the numbers
(IG completeness, deletion curves against random orders)."""

import html

import streamlit as st

from interp_core.attribution import (
    METHOD_NAMES,
    METHODS,
    Baseline,
    ContrastTarget,
    NextTokenTarget,
    attribute,
    attribute_continuation,
    deletion_curve,
    faithfulness_frame,
    neutral_token_id,
    target_from_text,
)
from interp_core.charts.attribution import (
    attribution_bar,
    continuation_heatmap,
    deletion_chart,
    deletion_frame,
    score_title,
)
from interp_core.charts.tokens import coloured_tokens_html, markdown_escape
from interp_core.errors import UserInputError
from interp_core.settings import limits
from interp_core.streamlit_glue import (
    cached_result,
    download_buttons,
    draw_chart,
    page_header,
    query_choice,
    query_int,
    show_user_error,
    sidebar,
    sync_query,
)
from interp_core.tokens import readable_token, token_texts

WARN_RELATIVE_DELTA = 0.05  # IG completeness residual above 5% of F(input) - F(baseline): do not trust the numbers
DEFAULT_STEPS = 64  # Gauss-Legendre converges by ~50 steps on small models
N_RANDOM = 3  # random deletion orders averaged
MODES = {"next": "Next token", "continuation": "A continuation, token by token"}
TARGET_MODES = {"top1": "The model's top-1 prediction", "token": "A token I pick",
                "contrast": "Contrast: why A rather than B"}
AGGREGATIONS = {"sum": "Signed sum over the embedding dimensions", "l2": "L2 norm (unsigned)"}
BASELINES = {"token": "Neutral token (EOS / pad)", "zero": "Zero embedding", "text": "A baseline text"}
QUADRATURES = {"gausslegendre": "Gauss-Legendre", "riemann_trapezoid": "Trapezoid (Riemann)"}

st.set_page_config(page_title="Attribution · Interpretability workbench", layout="wide")
page_header("Attribution", "How much each prompt token matters for one next-token prediction. Every method works "
            "on the token embeddings (positions are left as they are): **integrated gradients** walks from a "
            "baseline to the real embeddings, **saliency** is the size of the gradient, **input × gradient** its "
            "first-order effect, **occlusion** replaces one token at a time by the baseline. Blue pushes the target "
            "up, red pushes it down. The panel at the bottom says how far to trust the numbers.")
sel = sidebar()
bundle, trace = sel.bundle, sel.trace
caps = limits()


def keep(key: str, default) -> None:
    """Seed a widget's session value once and re-assign it every run, so it survives page switches."""
    if key not in st.session_state:
        st.session_state[key] = default
    st.session_state[key] = st.session_state[key]


def plain(text: str, tag: str = "p") -> None:
    """Show text that may hold token strings: escaped HTML, never Markdown."""
    st.html(f"<{tag} style='margin:0.2em 0'>{html.escape(text)}</{tag}>")


def fail(exc: UserInputError) -> None:
    """Show a user-facing problem and stop; its message may quote token text, so Markdown is escaped."""
    show_user_error(type(exc)(markdown_escape(str(exc))))


def as_typed(text: str) -> str:
    """Target text as typed; the visible-space marks of the token display count as the characters they show."""
    return text.replace("␣", " ").replace("↵", "\n").replace("⇥", "\t")


# --- settings --------------------------------------------------------------------------------------------------
if "attr_method" not in st.session_state:  # a new session: a shared link may say which method and steps
    st.session_state["attr_method"] = query_choice("method", list(METHODS), "integrated_gradients")
if "attr_steps" not in st.session_state:
    st.session_state["attr_steps"] = query_int("steps", DEFAULT_STEPS, 1, caps.max_ig_steps)
for key, default in [("attr_method", "integrated_gradients"), ("attr_steps", DEFAULT_STEPS), ("attr_mode", "next"),
                     ("attr_target_mode", "top1"), ("attr_token_a", ""), ("attr_token_b", ""),
                     ("attr_aggregation", "sum"), ("attr_baseline", "token"), ("attr_baseline_text", ""),
                     ("attr_quadrature", "gausslegendre"), ("attr_n_tokens", 5), ("attr_continuation", ""),
                     ("attr_deletion", True), ("attr_compare", False)]:
    keep(key, default)

c_mode, c_method, c_agg, c_base = st.columns([1.3, 1.2, 1.4, 1.3])
mode = c_mode.radio("Attribute", list(MODES), key="attr_mode", format_func=MODES.get)
method = c_method.selectbox("Method", list(METHODS), key="attr_method", format_func=METHOD_NAMES.get)
aggregation = c_agg.radio("Per-token score", list(AGGREGATIONS), key="attr_aggregation",
                          format_func=AGGREGATIONS.get, disabled=method == "occlusion",
                          help="Each method gives one value per embedding dimension; a token's score adds them up "
                               "with their signs (sum) or takes their length (L2, never negative). Saliency is "
                               "unsigned either way (sum = L1 norm). Occlusion gives one number per token already.")
baseline_kind = c_base.selectbox("Baseline (what 'absent' means)", list(BASELINES), key="attr_baseline",
                                 format_func=BASELINES.get,
                                 help="Integrated gradients starts from it, occlusion and the deletion curves "
                                      "replace tokens by it.")
baseline_text = ""
if baseline_kind == "text":
    baseline_text = c_base.text_input("Baseline text (as many tokens as the prompt)", key="attr_baseline_text",
                                      placeholder="The capital of Spain is")
elif baseline_kind == "token":
    neutral = readable_token(token_texts(bundle, [neutral_token_id(bundle)])[0])
    c_base.html(f"<small style='color:#5b6170'>Neutral token: {html.escape(neutral)} "
                f"(id {neutral_token_id(bundle)})</small>")

n_steps, quad = DEFAULT_STEPS, "gausslegendre"
if method == "integrated_gradients":
    c_steps, c_quad, _ = st.columns([1, 1, 2])
    n_steps = int(c_steps.number_input(f"Integration steps (1 to {caps.max_ig_steps})", step=1, key="attr_steps",
                                       help="More steps: smaller completeness residual, longer run. All steps go "
                                            "through the model in batches."))
    quad = c_quad.radio("Quadrature", list(QUADRATURES), key="attr_quadrature", format_func=QUADRATURES.get,
                        horizontal=True)
    sync_query(method=method, steps=n_steps)
else:
    sync_query(method=method, steps=None)
settings = (sel.ref, sel.prompt, method, aggregation, baseline_kind, baseline_text, n_steps, quad)


def baseline_of(kind: str, text: str) -> Baseline:
    return Baseline(kind, text=text)


@cached_result()
def cached_attribution(_bundle, _trace, ref, prompt, method, aggregation, baseline_kind, baseline_text, n_steps,
                       quad, target_key):
    """One attribution for the sidebar's (model, prompt) and these settings; a progress bar on a cache miss."""
    bar = st.progress(0.0, text=f"{METHOD_NAMES[method]}...")
    kind, ids = target_key
    target = NextTokenTarget(ids[0]) if kind == "token" else ContrastTarget(*ids) if kind == "contrast" else None
    result = attribute(_bundle, _trace, target, method=method, aggregation=aggregation,
                       baseline=baseline_of(baseline_kind, baseline_text), n_steps=n_steps, quadrature_method=quad,
                       progress=lambda f, text: bar.progress(min(max(f, 0.0), 1.0), text=text))
    bar.empty()
    return result


@cached_result()
def cached_deletion(_bundle, _attribution, key):
    """The deletion curve of an attribution identified by `key` (its settings); a progress bar on a miss."""
    bar = st.progress(0.0, text="Deletion curves...")
    curve = deletion_curve(_bundle, _attribution, n_random=N_RANDOM, seed=0,
                           progress=lambda f, text: bar.progress(min(max(f, 0.0), 1.0), text=text))
    bar.empty()
    return curve


@cached_result()
def cached_continuation(_bundle, _trace, ref, prompt, method, aggregation, baseline_kind, baseline_text, n_steps,
                        quad, n_tokens, continuation):
    bar = st.progress(0.0, text="Continuation...")
    result = attribute_continuation(_bundle, _trace, method=method, n_tokens=n_tokens,
                                    continuation=continuation or None, aggregation=aggregation,
                                    baseline=baseline_of(baseline_kind, baseline_text), n_steps=n_steps,
                                    quadrature_method=quad,
                                    progress=lambda f, text: bar.progress(min(max(f, 0.0), 1.0), text=text))
    bar.empty()
    return result


# --- a continuation, step by step ------------------------------------------------------------------------------
if mode == "continuation":
    c_n, c_text = st.columns([1, 3])
    n_tokens = int(c_n.number_input(f"Tokens to generate (1 to {caps.max_generated_tokens})", step=1,
                                    key="attr_n_tokens"))
    continuation = c_text.text_input("…or type the continuation to attribute (teacher forcing)",
                                     key="attr_continuation", placeholder="empty: the model generates greedily")
    try:
        cont = cached_continuation(bundle, trace, *settings, n_tokens, as_typed(continuation))
    except UserInputError as exc:
        fail(exc)
    st.subheader("Which input tokens each continuation token relied on")
    probs = cont.target_values.exp().tolist()
    st.html(coloured_tokens_html(cont.input_tokens[:cont.n_prompt] + cont.output_tokens,
                                 [float("nan")] * cont.n_prompt + probs, diverging=False, vmax=1.0,
                                 legend="prompt (grey), then the continuation shaded by p(token | everything before)"))
    draw_chart(continuation_heatmap, cont)
    st.caption("Row t: the attribution of log p(continuation token t | everything before it), the earlier "
               "continuation tokens fed as they are (teacher forcing). Empty cells come after that prediction.")
    frame = cont.to_frame()
    st.dataframe(frame, hide_index=True)
    download_buttons(frame, "continuation_attribution")
    st.stop()

# --- one next-token target -------------------------------------------------------------------------------------
def suggest_contrast(last_logits=trace.last_logits) -> None:
    """Switching to the contrast (runs before the script): empty tokens become the model's top two predictions,
    the question a contrast usually asks (why its first choice rather than its second)."""
    if st.session_state["attr_target_mode"] == "contrast" and not (st.session_state["attr_token_a"]
                                                                   or st.session_state["attr_token_b"]):
        first, second = token_texts(bundle, last_logits.topk(2).indices.tolist())
        st.session_state["attr_token_a"], st.session_state["attr_token_b"] = (readable_token(first),
                                                                              readable_token(second))


c_tmode, c_a, c_b = st.columns([1.4, 1, 1])
target_mode = c_tmode.radio("Target", list(TARGET_MODES), key="attr_target_mode", format_func=TARGET_MODES.get,
                            on_change=suggest_contrast)
token_a = token_b = ""
if target_mode in ("token", "contrast"):
    token_a = c_a.text_input("Token A" if target_mode == "contrast" else "Target token", key="attr_token_a",
                             placeholder="␣Paris", help="One token, usually with its leading space (type a space "
                                                        "or ␣), e.g. ' Paris'.")
    if not token_a:
        st.info("Type the target token (one token, usually with a leading space, e.g. ' Paris').")
        st.stop()
if target_mode == "contrast":
    token_b = c_b.text_input("Token B", key="attr_token_b", placeholder="␣London")
    if not token_b:
        st.info("Type token B, the alternative the model could have predicted instead of A.")
        st.stop()
try:
    target = target_from_text(bundle, as_typed(token_a), as_typed(token_b))
except UserInputError as exc:
    fail(exc)
if isinstance(target, ContrastTarget):
    target_key = ("contrast", (target.token_a, target.token_b))
elif target.token_id is not None:
    target_key = ("token", (target.token_id,))
else:
    target_key = ("top1", ())

try:
    result = cached_attribution(bundle, trace, *settings, target_key)
except UserInputError as exc:
    fail(exc)

units = "nats" if result.target_kind == "logprob" else "logits"
plain(f"Target: {result.target_label} = {result.target_value:.3f} {units}   ·   method: {METHOD_NAMES[method]}   ·   "
      f"baseline: {result.baseline_label}")
st.subheader("The prompt, coloured by attribution")
legend = ("blue: raises the target, red: lowers it, white: no effect" if result.signed
          else "darker blue: larger (unsigned) score")
st.html(coloured_tokens_html(result.tokens, result.scores, diverging=result.signed, legend=legend))
plain(f"{METHOD_NAMES[method]}: {score_title(result)} per prompt token, for {result.target_label}", "b")
draw_chart(attribution_bar, result)
frame = result.to_frame()
st.dataframe(frame, hide_index=True, column_config={"score": st.column_config.NumberColumn(format="%+.4f")})
download_buttons(frame, f"attribution_{method}")

# --- faithfulness ----------------------------------------------------------------------------------------------
st.subheader("How far to trust it")
if method == "integrated_gradients":
    gap = result.target_value - result.baseline_value
    cols = st.columns(5)
    cols[0].metric("F(input)", f"{result.target_value:.4f}")
    cols[1].metric("F(baseline)", f"{result.baseline_value:.4f}")
    cols[2].metric("sum of attributions", f"{result.signed_total:.4f}", help="Over all tokens and dimensions.")
    cols[3].metric("completeness residual δ", f"{result.delta:+.2e}",
                   help="δ = sum of attributions − (F(input) − F(baseline)); 0 for the exact integral.")
    cols[4].metric("|δ| / |F(input) − F(baseline)|", f"{100 * result.relative_delta:.2f} %")
    if result.relative_delta > WARN_RELATIVE_DELTA:
        st.warning(f"The completeness residual is {100 * result.relative_delta:.1f} % of F(input) − F(baseline) "
                   f"(more than {100 * WARN_RELATIVE_DELTA:.0f} %): the integral is not converged, so these scores "
                   "do not add up to the change they claim to explain. Use more steps or Gauss-Legendre.")
    else:
        st.caption(f"The attributions add up to F(input) − F(baseline) = {gap:.4f} within "
                   f"{100 * result.relative_delta:.2f} % (completeness).")
else:
    st.caption("The completeness check applies to integrated gradients only; the deletion curve below works for "
               "every method.")

show_deletion = st.toggle("Deletion curve: replace the top-ranked tokens by the baseline, against random orders",
                          key="attr_deletion")
compare = st.toggle("Compare all four methods (runs each of them; integrated gradients with the steps above)",
                    key="attr_compare")
if show_deletion or compare:
    methods = list(METHODS) if compare else [method]
    curves = []
    try:
        for name in methods:
            attr = result if name == method else cached_attribution(bundle, trace, sel.ref, sel.prompt, name,
                                                                     *settings[3:], target_key)
            key = (sel.ref, sel.prompt, name, *settings[3:], target_key)
            curves.append(cached_deletion(bundle, attr, key))
    except UserInputError as exc:
        fail(exc)
    table = faithfulness_frame(curves)
    current = table[table["method"] == method].iloc[0] if method in set(table["method"]) else table.iloc[0]
    cols = st.columns(3)
    cols[0].metric(f"AOPC, {METHOD_NAMES[method]}", f"{current['aopc']:.4f}",
                   help="Area over the perturbation curve (comprehensiveness): mean over k of the target's fall "
                        "after removing the k top-ranked tokens. Higher: the ranking found what matters.")
    cols[1].metric(f"AOPC, random orders (mean of {N_RANDOM})", f"{current['random_aopc']:.4f}")
    cols[2].metric("difference", f"{current['aopc_minus_random']:+.4f}")
    if current["aopc_minus_random"] <= 0:
        st.warning("Removing tokens in this method's order hurts the target no more than a random order: its "
                   "ranking is not faithful for this prompt and target.")
    draw_chart(deletion_chart, curves)
    download_buttons(deletion_frame(curves), "deletion_curves")
    if compare:
        st.markdown("**Faithfulness of each method here** (AOPC: higher is better; compare with random)")
        st.dataframe(table.drop(columns=["method"]), hide_index=True)
        download_buttons(table, "faithfulness_aopc")
