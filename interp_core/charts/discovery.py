"""Circuit-discovery charts: the circuit as a layered graph, faithfulness against circuit size, and one
prompt's information-flow routes.

    >>> circuit_graph(scores, edge_list(circuit), 0.87)   # x = layer, nodes stacked; width |score|, colour sign
    >>> faithfulness_chart(curve_eap_ig, curve_eap)        # each scorer's curve, and random circuits beside
    >>> routes_chart(contributions(bundle, trace), 0.04)   # one prompt's information-flow routes

Edges are drawn sender -> node fed (a q, k or v input is drawn into its head, with the input kind in the tooltip);
blue edges raise the answer's lead when clean (corrupting them lowers it: a negative score), red ones lower it.
"""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import torch

from interp_core.discovery import EdgeScores, FaithfulnessCurve, Graph, Node, circuit_from
from interp_core.discovery.routes import Contributions, route_edges
from interp_core.tokens import token_labels

NODE_PICK = "discovery_node"  # point selection on the graph's nodes (fields: node, kind, layer, head)
WIDTH = 640


def _positions(graph: Graph) -> dict[Node, tuple[float, float]]:
    """(x, y) of every node: x = 0 for the input, 2l + 1 for layer l's heads, 2l + 2 for its MLP, then the logits."""
    places = {Node("input", -1): (0.0, 0.0), Node("logits", graph.n_layers): (2.0 * graph.n_layers + 1, 0.0)}
    middle = (graph.n_heads - 1) / 2
    for layer in range(graph.n_layers):
        for head in range(graph.n_heads):
            places[Node("head", layer, head)] = (2.0 * layer + 1, head - middle)
        places[Node("mlp", layer)] = (2.0 * layer + 2, 0.0)
    return places


def _node_frame(graph: Graph, used: set[Node]) -> pd.DataFrame:
    places = _positions(graph)
    rows = [{"node": node.name, "kind": node.kind, "layer": node.layer, "head": node.head, "x": x, "y": y,
             "in circuit": node in used} for node, (x, y) in places.items()]
    return pd.DataFrame(rows)


def circuit_frame(scores: EdgeScores, circuit: torch.Tensor) -> pd.DataFrame:
    """One row per edge of the circuit: sender, receiver, the node it feeds, score and the two ends' places."""
    graph, places = scores.graph, _positions(scores.graph)
    rows = []
    for s, r in circuit.nonzero().tolist():
        sender, receiver = graph.senders[s], graph.receivers[r]
        for node in graph.fed_by(receiver):
            (x, y), (x2, y2) = places[sender], places[node]
            rows.append({"sender": sender.name, "receiver": receiver.name, "input": receiver.kind,
                         "score": float(scores.scores[s, r]), "x": x, "y": y, "x2": x2, "y2": y2})
    return pd.DataFrame(rows, columns=["sender", "receiver", "input", "score", "x", "y", "x2", "y2"])


def circuit_graph(scores: EdgeScores, edges: tuple[tuple[int, int], ...], faithfulness: float) -> alt.LayerChart:
    """The circuit with these (sender, receiver) edges (discovery.edge_list) over every node (nodes outside it
    faded), with its faithfulness in the title."""
    graph = scores.graph
    circuit = circuit_from(graph, edges)
    lines_frame = circuit_frame(scores, circuit)
    used = {graph.senders[s] for s, _ in circuit.nonzero().tolist()}
    used |= {n for _, r in circuit.nonzero().tolist() for n in graph.fed_by(graph.receivers[r])}
    nodes = _node_frame(graph, used)
    limit = max(float(lines_frame["score"].abs().max()) if len(lines_frame) else 1.0, 1e-12)
    x_axis = alt.X("x:Q", axis=None, scale=alt.Scale(domain=[-0.5, 2 * graph.n_layers + 1.5]))
    y_axis = alt.Y("y:Q", axis=None, scale=alt.Scale(domain=[-graph.n_heads / 2 - 0.5, graph.n_heads / 2]))
    lines = alt.Chart(lines_frame).mark_rule(opacity=0.7).encode(
        x=x_axis, y=y_axis, x2="x2:Q", y2="y2:Q",
        strokeWidth=alt.StrokeWidth("abs_score:Q", scale=alt.Scale(domain=[0, limit], range=[0.5, 6]), legend=None),
        color=alt.Color("sign:N", scale=alt.Scale(domain=["raises the answer", "lowers it"],
                                                  range=["#2166ac", "#b2182b"]), title="edge (clean)"),
        tooltip=["sender:N", "receiver:N", "input:N", alt.Tooltip("score:Q", format="+.4f")],
    ).transform_calculate(abs_score="abs(datum.score)", sign="datum.score < 0 ? 'raises the answer' : 'lowers it'")
    pick = alt.selection_point(name=NODE_PICK, fields=["node", "kind", "layer", "head"], on="click")
    points = alt.Chart(nodes).mark_circle(size=220, stroke="#333", strokeWidth=0.5).encode(
        x=x_axis, y=y_axis,
        color=alt.Color("kind:N", scale=alt.Scale(domain=["input", "head", "mlp", "logits"],
                                                  range=["#6a51a3", "#f4a582", "#92c5de", "#4d4d4d"]), title="node"),
        opacity=alt.condition("datum['in circuit']", alt.value(1.0), alt.value(0.15)),
        tooltip=["node:N", "kind:N", "layer:Q", "head:Q"],
    ).add_params(pick)
    labels = alt.Chart(nodes[nodes["in circuit"]]).mark_text(dy=-14, fontSize=10).encode(
        x=x_axis, y=y_axis, text="node:N")
    title = alt.TitleParams(f"Circuit: {int(circuit.sum())} of {graph.n_edges} edges, faithfulness "
                            f"{faithfulness:.3f}", subtitle=["x: layer (heads, then the MLP); click a node to open it"])
    height = min(720, max(300, 56 * graph.n_heads))
    return alt.layer(lines, points, labels).resolve_scale(color="independent").properties(
        width=WIDTH, height=height, title=title)


SCORER_NAMES = {"eap": "EAP", "eap_ig": "EAP-IG", "exact": "exact", "acdc": "ACDC", "random": "random circuits"}
SCORER_COLOURS = {"eap": "#e08214", "eap_ig": "#2166ac", "exact": "#1b7837", "acdc": "#762a83", "random": "#999999"}


def faithfulness_chart(curve: FaithfulnessCurve, *others: FaithfulnessCurve) -> alt.Chart:
    """Faithfulness against the number of edges kept, one line per scorer and a dashed one for random circuits."""
    frames = [c.to_frame() for c in (curve, *others)]
    shown = [c.method for c in (curve, *others)] + ["random"]
    rows = pd.concat([f.assign(scorer=f["method"].map(SCORER_NAMES), dashed=False) for f in frames]
                     + [frames[0].assign(scorer=SCORER_NAMES["random"], faithfulness=frames[0]["random"],
                                         dashed=True)])
    return alt.Chart(rows).mark_line(point=True).encode(
        x=alt.X("edges:Q", title="edges kept (largest |score| first, before pruning)",
                scale=alt.Scale(type="symlog")),
        y=alt.Y("faithfulness:Q", title="faithfulness"),
        color=alt.Color("scorer:N", title="scored by", scale=alt.Scale(
            domain=[SCORER_NAMES[m] for m in shown], range=[SCORER_COLOURS[m] for m in shown])),
        strokeDash=alt.StrokeDash("dashed:N", legend=None, scale=alt.Scale(domain=[False, True],
                                                                           range=[[1, 0], [4, 3]])),
        tooltip=["scorer:N", "edges:Q", "edges_after_pruning:Q", alt.Tooltip("faithfulness:Q", format=".3f")],
    ).properties(width=WIDTH, height=260, title=alt.TitleParams(
        "Faithfulness of the top-n circuit on held-out pairs", subtitle=[
            "1 = the model's behaviour, 0 = the corrupted prompts'; dashed: random circuits of each size (mean of 3)"]))


def routes_chart(found: Contributions, threshold: float) -> alt.LayerChart:
    """The information-flow routes into the last token (discovery.routes.route_edges): x = token, y = layer (the
    input at the bottom), an attention edge from a source token below to a target above, width = its share."""
    edges = route_edges(found, threshold)
    n_layers, n_pos = found.attn_residual.shape
    labels = token_labels(found.tokens)
    edges = edges.assign(source_label=[labels[s] for s in edges["source"]],
                         target_label=[labels[t] for t in edges["target"]], top=edges["layer"] + 1)
    x = alt.X("source:Q", title=None, scale=alt.Scale(domain=[-0.5, n_pos - 0.5]),
              axis=alt.Axis(values=list(range(n_pos)), labelExpr=_label_expr(labels), labelAngle=-45))
    lines = alt.Chart(edges).mark_rule(opacity=0.75).encode(
        x=x, x2="target:Q", y=alt.Y("layer:Q", title="layer",
                                    scale=alt.Scale(domain=[0, n_layers]), axis=alt.Axis(tickMinStep=1)),
        y2="top:Q", strokeWidth=alt.StrokeWidth("share:Q", scale=alt.Scale(domain=[0, 1], range=[0.5, 7]),
                                                 legend=None),
        color=alt.Color("kind:N", scale=alt.Scale(domain=["attention", "residual"], range=["#d6604d", "#878787"]),
                        title="part"),
        tooltip=["layer:Q", "source_label:N", "target_label:N", "kind:N", alt.Tooltip("share:Q", format=".3f")])
    # Full width whatever the prompt's length: the page draws with autosize "fit", which shrinks the plot until
    # its titles fit inside the chart's width, so a narrow chart with this subtitle had almost no plot left.
    # The height holds the titles and the slanted token labels too (autosize "fit" counts them in it).
    return alt.layer(lines).properties(width=WIDTH, height=min(640, 60 * n_layers + 160), title=alt.TitleParams(
        f"Information-flow routes into the last token (shares >= {threshold:g})",
        subtitle=["Ferrando & Voita 2024. The output bias b_O is a part of its own, so the parts rebuild each sum"]))


def _label_expr(labels: list[str]) -> str:
    """A Vega expression giving the token label of an integer axis value."""
    return f"{json.dumps(labels)}[datum.value]"
