"""Probing page: at which layer a labelled property becomes linearly readable from the residual stream, with a
majority-class baseline and a Hewitt & Liang control task so that the answer stays honest.

The probes do not use the sidebar's prompt: they run the model over a labelled dataset (built in, or a CSV the
user uploads). Uploads are kept in session state as bytes (UPLOAD_KEY), so they survive a page switch; the
AppTest tests put a CSV there directly because AppTest cannot drive st.file_uploader.
"""


import streamlit as st

from interp_core.charts.probing import accuracy_chart, confusion_chart, selectivity_chart
from interp_core.charts.tokens import markdown_escape
from interp_core.probing import (
    BUILTIN_DATASETS,
    CSV_EXAMPLE,
    DEFAULT_FOLDS,
    NPZ_HELP,
    TOKEN_CHOICES,
    UPLOAD_HELP,
    ProbeConfig,
    ProbeSummary,
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
    kept,
    metrics_row,
    page_header,
    persistent_int,
    progress_bar,
    query_choice,
    sidebar,
    sync_query,
    user_errors,
)

UPLOAD = "upload"  # dataset choice for a CSV of the user's own
UPLOAD_KEY = "probe_upload"  # session state: {"name": str, "data": bytes} of the last uploaded CSV
PREVIEW_ROWS = 200  # examples shown in the preview table (the download has all of them)
C_VALUES = (0.001, 0.01, 0.1, 1.0, 10.0)  # inverse L2 strength; smaller = simpler probe

st.set_page_config(page_title="Probing · Interpretability workbench", layout="wide")
page_header("Probing", "What each layer knows. A logistic-regression probe is trained on the residual stream at "
            "every layer to predict a label (subject number, tense, part of speech, ... or your own), and scored "
            "on held-out sentences. Two controls keep the answer honest: the majority-class baseline, and a "
            "**control task** (Hewitt & Liang 2019) where every word type gets a random label - a probe that "
            "learns that too is memorising words, not reading the property. *Selectivity* = task - control "
            "accuracy.")
bundle = sidebar().bundle


@cached_result(spinner="Running the model over the dataset...")
def cached_features(_bundle, _dataset, ref: str, fingerprint: str, token: str):
    """Residual stream at every layer for (model, dataset, token choice)."""
    return extract_features(_bundle, _dataset, token)


@cached_result()
def cached_report(_features, _dataset, ref: str, fingerprint: str, token: str, n_folds: int, c: float,
                  mlp: bool):
    """Cross-validated probes at every layer; a progress bar shows while they train (cache miss only)."""
    return run_probes(_features, _dataset, ProbeConfig(n_folds=n_folds, C=c, mlp=mlp),
                      progress=progress_bar("Training probes"))


@cached_result(spinner="Training the probe on all examples...")
def cached_weights(_features, _dataset, ref: str, fingerprint: str, token: str, layer: int, c: float):
    """The linear probe at `layer` trained on every example (for download)."""
    return fit_probe(_features, _dataset, layer, ProbeConfig(C=c))


def remember_upload() -> None:
    """Keep the uploaded file's bytes in session state (the uploader forgets them on a page switch)."""
    file = st.session_state.get("probe_csv")
    st.session_state[UPLOAD_KEY] = {"name": file.name, "data": file.getvalue()} if file is not None else None


# -- the dataset and the probe's settings, kept across page switches; a shared link may name the dataset
choices = [*BUILTIN_DATASETS, UPLOAD]
kept("probe_data", lambda: query_choice("probe_data", choices, choices[0]))
for key, default in (("probe_folds", DEFAULT_FOLDS), ("probe_c", ProbeConfig.C), ("probe_mlp", False)):
    kept(key, lambda default=default: default)
left, middle, right = st.columns([3, 2, 2])
choice = left.selectbox("Dataset", choices, key="probe_data",
                        format_func=lambda k: BUILTIN_DATASETS.get(k, "Upload a CSV of your own"))
with right.expander("Probe settings"):
    n_folds = st.number_input("Cross-validation folds", min_value=3, max_value=10, key="probe_folds",
                              help="Folds are grouped by sentence: no sentence is ever in both the training and "
                                   "the test part.")
    c = st.select_slider("Regularisation C (smaller = simpler probe)", C_VALUES, key="probe_c",
                         help="Inverse L2 strength of the logistic regression on standardised features. "
                              "Simpler probes memorise less, which raises selectivity (Hewitt & Liang 2019).")
    mlp = st.checkbox("Also train a small MLP probe (slower)", key="probe_mlp",
                      help="One hidden layer of 64 units. It has no class weights, unlike the linear probe.")

if choice == UPLOAD:
    st.file_uploader(f"CSV file (UTF-8, at most {limits().max_probe_rows} rows and "
                     f"{limits().max_upload_bytes / 1e6:.0f} MB)", type=["csv"], key="probe_csv",
                     on_change=remember_upload)
    upload = st.session_state.get(UPLOAD_KEY)
    with st.expander("CSV format", expanded=upload is None):
        st.markdown(UPLOAD_HELP)
        st.code(CSV_EXAMPLE, language="csv")
    if upload is None:
        st.info("Upload a CSV to probe for your own labels.")
        st.stop()
    st.caption("Using the uploaded file:")
    st.text(upload["name"])
    with user_errors():
        dataset = parse_probe_csv(upload["data"], n_folds=int(n_folds), name=upload["name"])
else:
    dataset = builtin_dataset(choice)

token = middle.selectbox("Read the residual stream at", dataset.token_choices, format_func=TOKEN_CHOICES.get,
                         key="probe_token_" + "_".join(dataset.token_choices),
                         help="Sentence labels: the last token (which has seen the whole sentence), the mean "
                              "over tokens, or the labelled word. Word labels: the word's last sub-token.")
st.caption(markdown_escape(dataset.description))
if choice != UPLOAD:  # uploaded labels are data, never Markdown: the class table under "The examples" has them
    st.caption(dataset.summary())
for note in dataset.notes:  # notes quote the upload's column names and labels: text, never Markdown
    st.info(markdown_escape(note))
with st.expander("The examples"):
    st.dataframe(dataset.class_frame(), hide_index=True)
    examples = dataset.to_frame()
    st.dataframe(examples.head(PREVIEW_ROWS), hide_index=True, width="stretch")
    download_buttons(examples, "probe_dataset")

# -- the probes ---------------------------------------------------------------------------------------------
with user_errors():
    features = cached_features(bundle, dataset, bundle.ref, dataset.fingerprint, token)
    report = cached_report(features, dataset, bundle.ref, dataset.fingerprint, token, int(n_folds), float(c),
                           bool(mlp))
summary = ProbeSummary.from_report(report)
metrics_row(summary.metrics)
st.markdown(summary.where)
draw_chart(accuracy_chart, report)
st.caption(summary.baseline_note)
table = report.layer_table()
st.dataframe(table, hide_index=True, width="stretch")
download_buttons(table, "probe_accuracy_by_layer")
if summary.control_note is None:
    draw_chart(selectivity_chart, report)
    download_buttons(table[["layer", "reads", "task_mean", "control_mean", "selectivity"]],
                     "probe_selectivity_by_layer")
else:
    st.info(summary.control_note)

# -- one layer: confusion matrix and the trained probe ------------------------------------------------------
st.subheader("One layer in detail")
persistent_int("probe_layer", report.best_layer, 0, report.n_layers)
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
                       mime="application/octet-stream", key="probe_weights_npz", help=NPZ_HELP)
    download_buttons(weights.to_frame(), f"probe_weights_layer{layer}")
