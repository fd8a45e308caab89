"""Probing page: at which layer a labelled property becomes linearly readable from the residual stream, with a
majority-class baseline and a Hewitt & Liang control task so that the answer stays honest.

The probes do not use the sidebar's prompt: they run the model over a labelled dataset (built in, or a CSV the
user uploads). Uploads are kept in session state as bytes (UPLOAD_KEY), so they survive a page switch; the
AppTest tests put a CSV there directly because AppTest cannot drive st.file_uploader.
"""

import numpy as np
import pandas as pd
import streamlit as st

from interp_core.charts.probing import accuracy_chart, confusion_chart, selectivity_chart
from interp_core.errors import UserInputError
from interp_core.probing import (
    BUILTIN_DATASETS,
    DEFAULT_FOLDS,
    TOKEN_CHOICES,
    ProbeConfig,
    builtin_dataset,
    extract_features,
    fit_probe,
    parse_probe_csv,
    resid_stage,
    run_probes,
)
from interp_core.settings import limits
from interp_core.streamlit_glue import (
    cached_result,
    download_buttons,
    draw_chart,
    page_header,
    persistent_int,
    show_user_error,
    sidebar,
    sync_query,
)

UPLOAD = "upload"  # dataset choice for a CSV of the user's own
KEPT = "probe_kept"  # session state: this page's widget values, kept across page switches
UPLOAD_KEY = "probe_upload"  # session state: {"name": str, "data": bytes} of the last uploaded CSV
PREVIEW_ROWS = 200  # examples shown in the preview table (the download has all of them)
C_VALUES = (0.001, 0.01, 0.1, 1.0, 10.0)  # inverse L2 strength; smaller = simpler probe
CSV_EXAMPLE = ("text,label\n"
               "The dogs chase the cat.,plural\n"
               "A cat sees the bird.,singular\n\n"
               "text,token_index,label\n"
               "The dogs chase the cat.,1,noun\n"
               "The dogs chase the cat.,2,verb")

st.set_page_config(page_title="Probing · Interpretability workbench", layout="wide")
page_header("Probing", "What each layer knows. A logistic-regression probe is trained on the residual stream at "
            "every layer to predict a label (subject number, tense, part of speech, ... or your own), and scored "
            "on held-out sentences. Two controls keep the answer honest: the majority-class baseline, and a "
            "**control task** (Hewitt & Liang) where every word type gets a random label - a probe that learns "
            "that too is memorising words, not reading the property. *Selectivity* = task - control accuracy.")
sel = sidebar()
bundle = sel.bundle


@cached_result(spinner="Running the model over the dataset...")
def cached_features(_bundle, _dataset, ref: str, fingerprint: str, token: str):
    """Residual stream at every layer for (model, dataset, token choice)."""
    return extract_features(_bundle, _dataset, token)


@cached_result()
def cached_report(_features, _dataset, ref: str, fingerprint: str, token: str, n_folds: int, c: float,
                  mlp: bool):
    """Cross-validated probes at every layer; a progress bar shows while they train (cache miss only)."""
    bar = st.progress(0.0, text="Training probes")
    report = run_probes(_features, _dataset, ProbeConfig(n_folds=n_folds, C=c, mlp=mlp),
                        progress=lambda f, text: bar.progress(f, text=text))
    bar.empty()
    return report


@cached_result(spinner="Training the probe on all examples...")
def cached_weights(_features, _dataset, ref: str, fingerprint: str, token: str, layer: int, c: float):
    """The linear probe at `layer` trained on every example (for download)."""
    return fit_probe(_features, _dataset, layer, ProbeConfig(C=c))


def remember_upload() -> None:
    """Keep the uploaded file's bytes in session state (the uploader forgets them on a page switch)."""
    file = st.session_state.get("probe_csv")
    st.session_state[UPLOAD_KEY] = {"name": file.name, "data": file.getvalue()} if file is not None else None


# -- the dataset --------------------------------------------------------------------------------------------
choices = [*BUILTIN_DATASETS, UPLOAD]
if KEPT not in st.session_state:  # first visit of the session: the link may name the dataset
    from_link = st.query_params.get("probe_data")
    if from_link is not None and from_link not in choices:
        st.warning(f"Ignored `probe_data` from the link: expected one of {', '.join(choices)}.")
    st.session_state[KEPT] = {"probe_data": from_link if from_link in choices else choices[0]}
# Streamlit forgets a widget's value when a page without that widget runs, so the values live on in KEPT (a
# plain session-state entry) and are handed back to the widgets on every run of this page.
for key, default in (("probe_data", choices[0]), ("probe_folds", DEFAULT_FOLDS), ("probe_c", ProbeConfig.C),
                     ("probe_mlp", False)):
    if key not in st.session_state:
        st.session_state[key] = st.session_state[KEPT].get(key, default)
left, middle, right = st.columns([3, 2, 2])
choice = left.selectbox("Dataset", choices, key="probe_data",
                        format_func=lambda k: BUILTIN_DATASETS.get(k, "Upload a CSV of your own"))
with right.expander("Probe settings"):
    n_folds = st.number_input("Cross-validation folds", min_value=3, max_value=10, key="probe_folds",
                              help="Folds are grouped by sentence: no sentence is ever in "
                              "both the training and the test part.")
    c = st.select_slider("Regularisation C (smaller = simpler probe)", C_VALUES, key="probe_c",
                         help="Inverse L2 strength of the logistic regression on standardised features. "
                              "Simpler probes memorise less, which raises selectivity (Hewitt & Liang).")
    mlp = st.checkbox("Also train a small MLP probe (slower)", key="probe_mlp",
                      help="One hidden layer of 64 units. It has no class weights, unlike the linear probe.")
st.session_state[KEPT].update(probe_data=choice, probe_folds=n_folds, probe_c=c, probe_mlp=mlp)

if choice == UPLOAD:
    st.file_uploader(f"CSV file (UTF-8, at most {limits().max_probe_rows} rows and "
                     f"{limits().max_upload_bytes / 1e6:.0f} MB)", type=["csv"], key="probe_csv",
                     on_change=remember_upload)
    upload = st.session_state.get(UPLOAD_KEY)
    with st.expander("CSV format", expanded=upload is None):
        st.markdown("Either one label per sentence (`text,label`), or one label per token "
                    "(`text,token_index,label`, the index counting this model's tokens from 0 as the Attention "
                    "page shows them). Rows with the same text are one sentence. Each class needs examples in "
                    "at least as many sentences as there are folds.")
        st.code(CSV_EXAMPLE, language="csv")
    if upload is None:
        st.info("Upload a CSV to probe for your own labels.")
        st.stop()
    st.caption("Using the uploaded file:")
    st.text(upload["name"])
    try:
        dataset = parse_probe_csv(upload["data"], n_folds=int(n_folds), name=upload["name"])
    except UserInputError as exc:
        show_user_error(exc)
else:
    dataset = builtin_dataset(choice)

token = middle.selectbox("Read the residual stream at", dataset.token_choices, format_func=TOKEN_CHOICES.get,
                         key="probe_token_" + "_".join(dataset.token_choices),
                         help="Sentence labels: the last token (which has seen the whole sentence), the mean "
                              "over tokens, or the labelled word. Word labels: the word's last sub-token.")
counts = dataset.class_counts()
st.caption(dataset.description)
if choice != UPLOAD:  # uploaded labels are data, never Markdown: the class table under "The examples" has them
    st.caption(f"{len(dataset)} examples in {dataset.n_sentences} sentences; classes: "
               + ", ".join(f"{name} ({n})" for name, n in counts.items()))
for note in dataset.notes:
    st.info(note)
with st.expander("The examples"):
    class_table = pd.DataFrame({"class": list(counts), "examples": list(counts.values())})
    st.dataframe(class_table, hide_index=True)
    examples = dataset.to_frame()
    st.dataframe(examples.head(PREVIEW_ROWS), hide_index=True, width="stretch")
    download_buttons(examples, "probe_dataset")

# -- the probes ---------------------------------------------------------------------------------------------
try:
    features = cached_features(bundle, dataset, bundle.ref, dataset.fingerprint, token)
    report = cached_report(features, dataset, bundle.ref, dataset.fingerprint, token, int(n_folds), float(c),
                           bool(mlp))
except UserInputError as exc:
    show_user_error(exc)

best = report.best_layer
cols = st.columns(5)
cols[0].metric("Best layer", best, help=resid_stage(best, report.n_layers))
cols[1].metric("Balanced accuracy there", f"{report.task_mean[best]:.3f}",
               delta=f"{report.task_mean[best] - report.baseline:+.3f} vs baseline")
if report.selectivity is not None:
    cols[2].metric("Selectivity there", f"{report.selectivity[best]:.3f}",
                   help="Task minus control-task accuracy at the best layer.")
    most = int(np.argmax(report.selectivity))
    cols[3].metric("Most selective layer", most, delta=f"selectivity {report.selectivity[most]:.3f}",
                   delta_color="off", delta_arrow="off", help=resid_stage(most, report.n_layers))
cols[4].metric("Layer 0 (embeddings)", f"{report.task_mean[0]:.3f}",
               help="What the token embeddings alone give: information that appears later was computed.")

first = report.first_good_layer
if first < best:
    where = (f"Layer **{first}** ({resid_stage(first, report.n_layers)}) already has 95% of the best layer's gain "
             f"over the baseline; the best is layer **{best}** ({resid_stage(best, report.n_layers)}).")
else:
    where = f"The label is read best at layer **{best}** ({resid_stage(best, report.n_layers)})."
st.markdown(where + " Compare with the control task before concluding that a layer *represents* it.")
draw_chart(accuracy_chart, report)
st.caption(f"Majority-class baseline: balanced accuracy {report.baseline:.2f} (always guessing the most common "
           f"class, which is {report.majority_share:.0%} of the examples).")
table = report.layer_table()
st.dataframe(table, hide_index=True, width="stretch")
download_buttons(table, "probe_accuracy_by_layer")

if report.selectivity is not None:
    draw_chart(selectivity_chart, report)
    download_buttons(table[["layer", "reads", "task_mean", "control_mean", "selectivity"]],
                     "probe_selectivity_by_layer")
else:
    st.info("No control task: the data has a single word type, so random labels per type cannot be drawn.")

# -- one layer: confusion matrix and the trained probe ------------------------------------------------------
st.subheader("One layer in detail")
persistent_int("probe_layer", best, 0, report.n_layers)
layer = st.selectbox("Layer", list(range(report.n_layers + 1)), key="probe_layer",
                     format_func=lambda x: f"{x}: {resid_stage(x, report.n_layers)}")
sync_query(probe_layer=layer, probe_data=choice)
chart_col, weights_col = st.columns([3, 2])
with chart_col:
    draw_chart(confusion_chart, report, layer)
    download_buttons(report.confusion_frame(layer), f"probe_confusion_layer{layer}")
with weights_col:
    weights = cached_weights(features, dataset, bundle.ref, dataset.fingerprint, token, layer, float(c))
    st.markdown(f"**The probe at layer {layer}**, trained on all {len(dataset)} examples (training balanced "
                f"accuracy {weights.train_accuracy:.3f}, optimistic by construction).")
    st.download_button("Download weights (.npz)", weights.to_npz(), file_name=f"probe_layer{layer}.npz",
                       mime="application/octet-stream", key="probe_weights_npz",
                       help="numpy arrays, no pickle: np.load(f, allow_pickle=False). coef_raw and intercept_raw "
                            "apply to the raw residual stream; coef, intercept, mean and scale to the "
                            "standardised one.")
    download_buttons(weights.to_frame(), f"probe_weights_layer{layer}")
