"""Probing page: at which layer a labelled property becomes linearly readable from the residual stream, with a
majority-class baseline and a Hewitt & Liang control task so that the answer stays honest.

The probes do not use the sidebar's prompt: they run the model over a labelled dataset (built in, or a CSV the
user uploads). An upload is kept in session state as bytes (glue.kept_upload, under "probe_csv_kept"), so it
survives a page switch; the AppTest tests put a CSV there directly because AppTest cannot drive st.file_uploader.
"""


import streamlit as st

from interp_core import probing
from interp_core import streamlit_glue as glue
from interp_core.charts import probing as charts
from interp_core.charts.tokens import markdown_escape
from interp_core.findings.kinds import probing_numbers
from interp_core.settings import limits
from interp_core.streamlit_glue.probing import probe_settings

UPLOAD = "upload"  # dataset choice for a CSV of the user's own
PREVIEW_ROWS = 200  # examples shown in the preview table (the download has all of them)

st.set_page_config(page_title="Probing · Interpretability workbench", layout="wide")
glue.page_header("Probing", "What each layer knows. A logistic-regression probe is trained on the residual stream "
                 "at every layer to predict a label (subject number, tense, part of speech, ... or your own), and "
                 "scored on held-out sentences. Two controls keep the answer honest: the majority-class baseline, "
                 "and a **control task** (Hewitt & Liang 2019) where every word type gets a random label - a probe "
                 "that learns that too is memorising words, not reading the property. *Selectivity* = task - "
                 "control accuracy.")
sel = glue.sidebar()
bundle = sel.bundle


@glue.cached_result(spinner="Running the model over the dataset...")
def cached_features(_bundle, _dataset, ref: str, fingerprint: str, token: str):
    """Residual stream at every layer for (model, dataset, token choice)."""
    return probing.extract_features(_bundle, _dataset, token)


@glue.cached_result()
def cached_report(_features, _dataset, ref: str, fingerprint: str, token: str, config: probing.ProbeConfig):
    """Cross-validated probes at every layer; a progress bar shows while they train (cache miss only)."""
    return probing.run_probes(_features, _dataset, config, progress=glue.progress_bar("Training probes"))


@glue.cached_result(spinner="Training the probe on all examples...")
def cached_weights(_features, _dataset, ref: str, fingerprint: str, token: str, layer: int, c: float):
    """The linear probe at `layer` trained on every example (for download)."""
    return probing.fit_probe(_features, _dataset, layer, probing.ProbeConfig(C=c))


# -- the dataset and the probe's settings, kept across page switches; a shared link may name the dataset
choices = [*probing.BUILTIN_DATASETS, UPLOAD]
glue.kept("probe_data", lambda: choices[0], link="probe_data", options=choices)
left, middle, right = st.columns([3, 2, 2])
choice = left.selectbox("Dataset", choices, key="probe_data",
                        format_func=lambda k: probing.BUILTIN_DATASETS.get(k, "Upload a CSV of your own"))
with right.expander("Probe settings"):
    config = probe_settings()

if choice == UPLOAD:
    upload = glue.kept_upload(f"CSV file (UTF-8, at most {limits().max_probe_rows} rows and "
                              f"{limits().max_upload_bytes / 1e6:.0f} MB)", key="probe_csv", types=["csv"])
    with st.expander("CSV format", expanded=upload is None):
        st.markdown(probing.UPLOAD_HELP)
        st.code(probing.CSV_EXAMPLE, language="csv")
    if upload is None:
        st.info("Upload a CSV to probe for your own labels.")
        st.stop()
    with glue.user_errors():
        dataset = probing.parse_probe_csv(upload["data"], n_folds=config.n_folds, name=upload["name"])
else:
    dataset = probing.builtin_dataset(choice)

token_key = "probe_token_" + "_".join(dataset.token_choices)  # a key per set of choices
glue.kept(token_key, lambda: dataset.token_choices[0], link="probe_token", options=dataset.token_choices)
token = middle.selectbox("Read the residual stream at", dataset.token_choices,
                         format_func=probing.TOKEN_CHOICES.get, key=token_key,
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
    glue.download_buttons(examples, "probe_dataset")

# -- the probes ---------------------------------------------------------------------------------------------
with glue.user_errors():
    features = cached_features(bundle, dataset, bundle.ref, dataset.fingerprint, token)
    report = cached_report(features, dataset, bundle.ref, dataset.fingerprint, token, config)
summary = probing.ProbeSummary.from_report(report)
glue.metrics_row(summary.metrics)
st.markdown(summary.where)
glue.draw_chart(charts.accuracy_chart, report)
st.caption(summary.baseline_note)
table = report.layer_table()
st.dataframe(table, hide_index=True, width="stretch")
glue.download_buttons(table, "probe_accuracy_by_layer")
if summary.control_note is None:
    glue.draw_chart(charts.selectivity_chart, report)
    glue.download_buttons(table[["layer", "reads", "task_mean", "control_mean", "selectivity"]],
                          "probe_selectivity_by_layer")
else:
    st.info(summary.control_note)

# -- one layer: confusion matrix and the trained probe ------------------------------------------------------
st.subheader("One layer in detail")
glue.persistent_int("probe_layer", report.best_layer, 0, report.n_layers)
layer = st.selectbox("Layer", list(range(report.n_layers + 1)), key="probe_layer",
                     format_func=lambda x: f"{x}: {probing.resid_stage(x, report.n_layers)}")
glue.sync_query(probe_layer=layer)
chart_col, weights_col = st.columns([3, 2])
with chart_col:
    glue.draw_chart(charts.confusion_chart, report, layer)
    glue.download_buttons(report.confusion_frame(layer), f"probe_confusion_layer{layer}")
with weights_col:
    weights = cached_weights(features, dataset, bundle.ref, dataset.fingerprint, token, layer, config.C)
    st.markdown(f"**The probe at layer {layer}**, trained on all {len(dataset)} examples (training balanced "
                f"accuracy {weights.train_accuracy:.3f}, optimistic by construction).")
    st.download_button("Download weights (.npz)", weights.to_npz(), file_name=f"probe_layer{layer}.npz",
                       mime="application/octet-stream", key="probe_weights_npz", help=probing.NPZ_HELP)
    glue.download_buttons(weights.to_frame(), f"probe_weights_layer{layer}")
glue.findings_box(sel, "probing", {"dataset": choice, "token": token, "n_folds": config.n_folds, "C": config.C,
                                   "mlp": config.mlp, "layer": layer}, probing_numbers(report, layer),
                  checkable="the probes ran on an uploaded CSV" if choice == UPLOAD else "")
