"""Circuit discovery page: score every edge of the model's graph on a task of prompt pairs (EAP, EAP-IG, exact edge
patching, or ACDC), keep the strongest edges as a circuit, and show how much of the behaviour it carries
(faithfulness, against random circuits of the same size). Thin: widgets -> cached calls into
interp_core.discovery -> the graph, the curve and their downloads.
"""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from interp_core import discovery
from interp_core import streamlit_glue as glue
from interp_core.charts import discovery as charts
from interp_core.charts import selected_point
from interp_core.findings.kinds import MAX_EXACT_EDGES, discovery_numbers
from interp_core.streamlit_glue import discovery as shared

METHODS = {"eap_ig": "EAP-IG", "eap": "EAP", "exact": "Exact edge patching", "acdc": "ACDC"}

st.set_page_config(page_title="Circuit discovery · Interpretability workbench", layout="wide")
glue.page_header("Circuit discovery", "Which connections between heads and MLPs carry a behaviour. Every edge "
                 "(a node's output read by a later node's query, key, value or MLP input, or by the logits) is "
                 "scored by how much the answer's lead would change if that edge alone carried its value from the "
                 "corrupted prompt. The strongest edges form a circuit; its **faithfulness** is how much of the "
                 "behaviour it keeps when every other edge is corrupted (1 = all of it, 0 = none), measured on "
                 "pairs it was not scored on, beside random circuits of the same size.")
sel = glue.sidebar()
bundle = sel.bundle
graph = discovery.build_graph(bundle)


@glue.cached_result(spinner="Splitting every residual sum into its parts...")
def cached_routes(_bundle, _trace, ref: str, prompt: str):
    return discovery.contributions(_bundle, _trace)


@glue.cached_result()
def cached_scores(_bundle, _data, ref: str, task: str, n_pairs: int, method: str, steps: int):
    """Edge scores, or for ACDC its result (the circuit it kept and each tried edge's change)."""
    progress = glue.progress_bar(f"{METHODS[method]}...")
    if method == "acdc":
        return discovery.acdc(_bundle, discovery.build_graph(_bundle), _data, progress=progress)
    return discovery.edge_scores(_bundle, discovery.build_graph(_bundle), _data, method=method, steps=steps,
                                 progress=progress, max_exact_edges=MAX_EXACT_EDGES)


@glue.cached_result()
def cached_curve(_bundle, _scores, _held_out, ref: str, task: str, n_pairs: int, method: str, steps: int):
    return discovery.faithfulness_curve(_bundle, _scores, _held_out, progress=glue.progress_bar("Faithfulness..."))


@glue.cached_result()
def cached_faithfulness(_bundle, _scores, _held_out, ref, task, n_pairs, method, steps, edges: tuple):
    """Faithfulness on the held-out pairs of the circuit with these (sender, receiver) edges."""
    return discovery.faithfulness(_bundle, _scores.graph, _held_out, discovery.circuit_from(_scores.graph, edges))


glue.kept("disc_method", lambda: "eap_ig", link="method", options=list(METHODS))
glue.kept("disc_steps", lambda: 5, fit=lambda n: min(max(int(n), 1), 50), link="disc_steps")
c_task, c_pairs, c_method, c_steps = st.columns([2, 1, 2, 1])
task, n_pairs = shared.task_widgets(c_task, c_pairs)
method = c_method.radio("Scored by", list(METHODS), key="disc_method", format_func=METHODS.get, horizontal=True)
steps = int(c_steps.number_input("EAP-IG steps", 1, 50, key="disc_steps", disabled=method != "eap_ig"))
st.caption(discovery.graph_caption(graph))
if method in ("exact", "acdc") and graph.n_edges > MAX_EXACT_EDGES:
    st.info(f"{METHODS[method]} runs one pass per edge: {graph.n_edges:,} edges is over {MAX_EXACT_EDGES:,}. "
            "Use EAP-IG on a model this size.")
    st.stop()

data, held_out = shared.task_pairs(bundle, task, n_pairs)
found = cached_scores(bundle, data, bundle.ref, task, n_pairs, method, steps)
key = (bundle.ref, task, n_pairs, method, steps)
if method == "acdc":  # ACDC keeps a circuit of its own; its edges' changes stand in for scores
    scores, circuit = found.changes, found.circuit
    st.caption(f"ACDC tried {found.evaluations} edges and kept {int(circuit.sum())} (threshold {found.threshold}).")
else:
    scores = found
    overlays = [m for m in METHODS if m not in (method, "acdc")]
    glue.kept("disc_compare", lambda: [], fit=lambda kept: [m for m in kept if m in overlays], link="compare")
    others = st.multiselect("Overlay the curves of", overlays,
                            format_func=METHODS.get, key="disc_compare")
    curves = [cached_curve(bundle, cached_scores(bundle, data, bundle.ref, task, n_pairs, m, steps), held_out,
                           bundle.ref, task, n_pairs, m, steps) for m in (method, *others)]
    glue.draw_chart(charts.faithfulness_chart, *curves)
    glue.download_buttons(pd.concat([c.to_frame() for c in curves]), "faithfulness_curves")

st.subheader("The circuit")
if method != "acdc":
    glue.kept("disc_edges", lambda: min(graph.n_edges, max(1, graph.n_edges // 10)), link="edges",
              fit=lambda n: min(max(int(n), 1), graph.n_edges))
    n_edges = int(st.slider("Edges kept (the largest |score|)", 1, graph.n_edges, key="disc_edges"))
    circuit = discovery.top_edges(scores, n_edges)
edges = discovery.edge_list(circuit)
faith = cached_faithfulness(bundle, scores, held_out, *key, edges)
glue.draw_chart(charts.circuit_graph, scores, edges, faith, on_select="rerun", selection_mode=charts.NODE_PICK,
                key="disc_graph")
glue.metrics_row(discovery.circuit_metrics(circuit, graph, faith))
shared.node_panel(bundle, graph, data, task, n_pairs, selected_point(st.session_state.get("disc_graph"),
                                                                     charts.NODE_PICK))
with st.expander("The circuit's edges (table)"):
    st.dataframe(charts.circuit_frame(scores, circuit)[["sender", "receiver", "input", "score"]], hide_index=True)
glue.download_buttons(scores.to_frame(), f"edge_scores_{method}")
st.download_button("Download the circuit (JSON)", json.dumps(discovery.circuit_json(
    scores, circuit, faith, bundle.ref, data.name), indent=1), file_name=f"circuit_{task}_{method}.json",
    mime="application/json", key="disc_circuit_json", on_click="ignore")

st.subheader("Information flow on your prompt")
st.caption("Which earlier tokens each residual sum is made of, for the sidebar's prompt (no task needed): the share "
           "of each part of each sum, from the last token down. It shows routes, not causes: patching tests those.")
glue.kept("disc_threshold", lambda: 0.04, fit=lambda x: min(max(float(x), 0.01), 0.5), link="threshold")
threshold = st.slider("Smallest share drawn", 0.01, 0.5, step=0.01, key="disc_threshold")
routes = cached_routes(bundle, sel.trace, sel.ref, sel.prompt)
glue.draw_chart(charts.routes_chart, routes, threshold)
glue.download_buttons(routes.to_frame(), "contributions")
glue.findings_box(sel, "discovery", {"task": task, "n_pairs": n_pairs, "method": method, "steps": steps,
                                     "n_edges": int(circuit.sum()) if method == "acdc" else n_edges},
                  discovery_numbers(circuit, graph, faith),
                  checkable="its pairs came from an uploaded CSV" if task == shared.UPLOAD else "")
