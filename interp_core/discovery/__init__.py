"""Circuit discovery: the graph of heads, MLPs and their edges, edge scores (EAP, EAP-IG, exact), ACDC, and circuits'
faithfulness.

    >>> graph = build_graph(bundle)
    >>> data = ioi_pairs(bundle, n=64)
    >>> scores = edge_scores(bundle, graph, data, method="eap_ig", steps=5)
    >>> faithfulness(bundle, graph, ioi_pairs(bundle, n=64, names="held_out"), top_edges(scores, 40))

Modules: `graph` (nodes and edges, as hannamw/EAP-IG), `graph_run` (the model run with single edges cut or
differentiated, through the activation API), `pairs` and `tasks` (a task as a dataset of clean / corrupted pairs),
`scores`, `faithfulness` (top-n circuits, pruning, curves against random circuits), `acdc`, `direct` (each
node's direct effect on the task), `routes`
(one prompt's information-flow routes), `views`.
"""

from interp_core.discovery.acdc import AcdcResult, acdc
from interp_core.discovery.faithfulness import (
    Baselines,
    FaithfulnessCurve,
    faithfulness,
    faithfulness_curve,
    prune,
    top_edges,
)
from interp_core.discovery.graph import Graph, Node, build_graph
from interp_core.discovery.pairs import PairBatch, PairData
from interp_core.discovery.routes import Contributions, contributions, route_edges
from interp_core.discovery.scores import METHODS, EdgeScores, edge_scores
from interp_core.discovery.tasks import (
    PAIRS_HELP,
    TASKS,
    PairsFileError,
    builtin_task,
    capital_pairs,
    induction_pairs,
    ioi_pairs,
    pairs_from_csv,
    split_pairs,
    task_pairs,
)
from interp_core.discovery.views import (
    circuit_from,
    circuit_json,
    circuit_metrics,
    circuit_nodes,
    edge_list,
    graph_caption,
)

__all__ = [
    "METHODS", "PAIRS_HELP", "TASKS", "AcdcResult", "Baselines", "Contributions", "EdgeScores", "FaithfulnessCurve",
    "Graph", "Node", "PairBatch", "PairData", "PairsFileError", "acdc", "build_graph", "builtin_task",
    "capital_pairs", "circuit_from", "circuit_json", "circuit_metrics", "circuit_nodes", "contributions",
    "edge_list", "edge_scores", "faithfulness", "faithfulness_curve", "graph_caption", "induction_pairs", "ioi_pairs",
    "pairs_from_csv", "prune", "route_edges", "split_pairs", "task_pairs", "top_edges",
]
