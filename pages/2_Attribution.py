"""Attribution page: how much each prompt token matters for a chosen next token (integrated gradients, saliency,
input x gradient, occlusion), a continuation attributed step by step, and how far to trust the numbers
(IG completeness, deletion curves against random orders)."""

import streamlit as st

from interp_core import attribution as attr
from interp_core import streamlit_glue as glue
from interp_core.charts import attribution as charts
from interp_core.findings import kinds
from interp_core.settings import limits
from interp_core.streamlit_glue.attribution import attribution_settings

MODES = {"next": "Next token", "continuation": "A continuation, token by token"}
WIDGETS = {"attr_mode": "next", "attr_target_mode": "top1", "attr_token_a": "", "attr_token_b": "",
           "attr_n_tokens": 5, "attr_continuation": "", "attr_deletion": True,
           "attr_compare": False}  # session key -> default (the settings' defaults are the library's)

st.set_page_config(page_title="Attribution · Interpretability workbench", layout="wide")
glue.page_header("Attribution", "How much each prompt token matters for one next-token prediction. Every method "
                 "works on the token embeddings (positions are left as they are): **integrated gradients** walks from "
                 "a baseline to the real embeddings, **saliency** is the size of the gradient, **input × gradient** "
                 "its first-order effect, **occlusion** replaces one token at a time by the baseline. Blue pushes the "
                 "target up, red pushes it down. The panel at the bottom says how far to trust the numbers.")
sel = glue.sidebar()
bundle, trace, caps, state = sel.bundle, sel.trace, limits(), st.session_state


def show(verdict: attr.Verdict) -> None:
    """A check's figures as metrics, then its sentence: a caption when ok, else a warning."""
    if verdict.figures:
        glue.metrics_row(verdict.figures)
    (st.caption if verdict.ok else st.warning)(verdict.message)


@glue.cached_result()
def cached_attribution(_bundle, _trace, ref, prompt, settings, target):
    progress = glue.progress_bar(f"{attr.METHOD_NAMES[settings.method]}...")
    return attr.attribute(_bundle, _trace, target, **settings.as_kwargs(), progress=progress)


@glue.cached_result()
def cached_comparison(_bundle, _trace, _result, ref, prompt, settings, target, methods):
    progress = glue.progress_bar("Deletion curves...")
    return attr.compare_methods(_bundle, _trace, target, settings, methods=methods, reuse=_result, progress=progress)


@glue.cached_result()
def cached_continuation(_bundle, _trace, ref, prompt, settings, n_tokens, continuation):
    return attr.attribute_continuation(_bundle, _trace, **settings.as_kwargs(), n_tokens=n_tokens,
                                       continuation=continuation or None, progress=glue.progress_bar("Continuation..."))


# --- settings, kept across reruns and pages (a shared link may say which method and steps) --------------------
OPTIONS = {"attr_mode": list(MODES), "attr_target_mode": list(attr.TARGET_MODES)}
for key, default in WIDGETS.items():  # each in the URL under its own name, so a link or a finding reopens the view
    glue.kept(key, lambda default=default: default, link=key, options=OPTIONS.get(key))
c_mode, *setting_columns = st.columns([1.3, 1.2, 1.4, 1.3])
mode = c_mode.radio("Attribute", list(MODES), key="attr_mode", format_func=MODES.get)
settings = attribution_settings(bundle, setting_columns, with_steps=state["attr_compare"])
method = settings.method


def suggest_contrast(bundle=bundle, last_logits=trace.last_logits) -> None:
    """Switching to the contrast (runs before the script): empty tokens become the model's top two predictions."""
    if state["attr_target_mode"] == "contrast" and not (state["attr_token_a"] or state["attr_token_b"]):
        state["attr_token_a"], state["attr_token_b"] = attr.contrast_suggestion(bundle, last_logits)


with glue.user_errors():  # --- a continuation, step by step; or one next-token target --------------------------
    if mode == "continuation":
        c_n, c_text = st.columns([1, 3])
        n_tokens = c_n.number_input(f"Tokens to generate (1 to {caps.max_generated_tokens})", step=1,
                                    key="attr_n_tokens")
        typed = c_text.text_input("…or type the continuation to attribute (teacher forcing)",
                                  key="attr_continuation", placeholder="empty: the model generates greedily")
        cont = cached_continuation(bundle, trace, sel.ref, sel.prompt, settings, int(n_tokens), attr.as_typed(typed))
        st.subheader("Which input tokens each continuation token relied on")
        st.html(charts.continuation_tokens_html(cont))
        glue.draw_chart(charts.continuation_heatmap, cont)
        st.caption("Row t: the attribution of log p(continuation token t | everything before it), the earlier "
                   "continuation tokens fed as they are (teacher forcing). Empty cells come after that prediction.")
        frame = cont.to_frame()
        st.dataframe(frame, hide_index=True)
        glue.download_buttons(frame, "continuation_attribution")
        glue.findings_box(sel, "attribution", {**kinds.settings_inputs(settings), "mode": "continuation",
                                               "n_tokens": int(n_tokens), "continuation": attr.as_typed(typed)},
                          kinds.continuation_numbers(cont))
        st.stop()
    c_tmode, c_a, c_b = st.columns([1.4, 1, 1])
    target_mode = c_tmode.radio("Target", list(attr.TARGET_MODES), key="attr_target_mode",
                                format_func=attr.TARGET_MODES.get, on_change=suggest_contrast)
    token_a = token_b = ""
    if target_mode != "top1":
        token_a = c_a.text_input("Token A" if target_mode == "contrast" else "Target token", key="attr_token_a",
                                 placeholder="␣Paris", help="One token, usually with its leading space (type a "
                                                            "space or ␣), e.g. ' Paris'.")
    if target_mode == "contrast" and token_a:
        token_b = c_b.text_input("Token B", key="attr_token_b", placeholder="␣London")
    if missing := attr.missing_target_text(target_mode, token_a, token_b):
        st.info(missing)
        st.stop()
    target = attr.target_from_text(bundle, attr.as_typed(token_a), attr.as_typed(token_b))
    result = cached_attribution(bundle, trace, sel.ref, sel.prompt, settings, target)
    glue.plain_text(charts.attribution_summary(result))
    st.subheader("The prompt, coloured by attribution")
    st.html(charts.attribution_tokens_html(result))
    glue.plain_text(charts.bar_heading(result), "b")
    glue.draw_chart(charts.attribution_bar, result)
    frame = result.to_frame()
    st.dataframe(frame, hide_index=True, column_config={"score": st.column_config.NumberColumn(format="%+.4f")})
    glue.download_buttons(frame, f"attribution_{method}")

    st.subheader("How far to trust it")  # --- faithfulness ----------------------------------------------------
    show(attr.completeness_verdict(result))
    show_deletion = st.toggle("Deletion curve: replace the top-ranked tokens by the baseline, against random orders",
                              key="attr_deletion")
    compare = st.toggle("Compare all four methods (each with the settings above; integrated gradients with the "
                        "steps and quadrature above)", key="attr_compare")
    report = None
    if show_deletion or compare:
        report = cached_comparison(bundle, trace, result, sel.ref, sel.prompt, settings, target,
                                   attr.METHODS if compare else (method,))
        show(attr.deletion_verdict(report.curve(method)))
        glue.draw_chart(charts.deletion_chart, report)
        glue.download_buttons(charts.deletion_frame(report), "deletion_curves")
        if compare:
            st.markdown("**Faithfulness of each method here** (AOPC after Samek et al. 2017: higher is better; "
                        "compare with random)")
            table = report.to_frame()
            st.dataframe(table.drop(columns=["method"]), hide_index=True)
            glue.download_buttons(table, "faithfulness_aopc")
    glue.findings_box(sel, "attribution", {**kinds.settings_inputs(settings), "mode": "next", "token_a": token_a,
                                           "token_b": token_b, "deletion": report is not None},
                      kinds.attribution_numbers(result, report and report.curve(method)))
