"""The Circuit discovery page's task: the task box and number of pairs (kept, `?task=`), a CSV of the user's own
pairs that survives a page switch, and the task's scoring and held-out pairs, or the message that stops the page."""

from __future__ import annotations

import streamlit as st

from interp_core import discovery
from interp_core.discovery.direct import direct_effects, node_effect_metrics, promoted_tokens
from interp_core.errors import UserInputError
from interp_core.loading import ModelBundle
from interp_core.streamlit_glue.models import cached_result
from interp_core.streamlit_glue.state import kept
from interp_core.streamlit_glue.widgets import download_buttons, kept_upload, metrics_row, show_user_error

UPLOAD = "upload"  # the task choice for a CSV of the user's own pairs


@cached_result(spinner="Building the task's pairs...")
def _pairs(_bundle: ModelBundle, ref: str, task: str, n_pairs: int, split: str, upload: bytes | None):
    return discovery.task_pairs(_bundle, task, n_pairs, split, upload)


def task_widgets(task_column, pairs_column) -> tuple[str, int]:
    """The task box and the number of pairs, in the two columns given."""
    choices = [*discovery.TASKS, UPLOAD]
    kept("disc_task", lambda: "ioi", link="task", options=choices)
    kept("disc_pairs", lambda: 32, fit=lambda n: min(max(int(n), 4), 256), link="pairs")
    task = task_column.selectbox("Task", choices, key="disc_task",
                                 format_func=lambda k: discovery.TASKS.get(k, "Your own pairs (a CSV)"))
    n_pairs = pairs_column.number_input("Pairs", 4, 256, step=4, key="disc_pairs",
                                        help="Pairs to score on; as many other pairs (other names for IOI) evaluate.")
    return task, int(n_pairs)


def task_pairs(bundle: ModelBundle, task: str, n_pairs: int) -> tuple[discovery.PairData, discovery.PairData]:
    """(scoring pairs, held-out pairs) of the task; for an upload, its uploader first. Stops the page with a
    plain message when there is nothing to score: no upload yet, a bad file, or words this tokenizer splits."""
    upload = None
    if task == UPLOAD:
        upload = kept_upload("Pairs (CSV)", key="disc_csv", types=["csv"])
        st.caption(discovery.PAIRS_HELP + " Even rows score the edges, odd rows measure faithfulness.")
        if upload is None:
            st.info("Upload a CSV of pairs to find their circuit.")
            st.stop()
    data = upload and upload["data"]
    try:
        return (_pairs(bundle, bundle.ref, task, n_pairs, "scoring", data),
                _pairs(bundle, bundle.ref, task, n_pairs, "held_out", data))
    except discovery.PairsFileError as exc:
        show_user_error(exc)
    except UserInputError as exc:  # the tokenizer splits the task's words: a limit of the model, not an error
        st.info(f"{exc} The induction task's random tokens work with any tokenizer.")
        st.stop()


@cached_result(spinner="Each node's direct effect on the task...")
def _direct(_bundle: ModelBundle, _graph: discovery.Graph, _data: discovery.PairData, ref: str, task: str,
            n_pairs: int):
    return direct_effects(_bundle, _graph, _data)


def node_panel(bundle: ModelBundle, graph: discovery.Graph, data: discovery.PairData, task: str, n_pairs: int,
               picked: dict | None) -> None:
    """What a click on the circuit graph opens: a head's attention pattern (a link), and for a head or an MLP its
    direct effect on the task's logit difference and the tokens its output promotes and suppresses."""
    if not picked or picked.get("kind") not in ("head", "mlp"):
        return
    node = picked["node"]
    st.markdown(f"**{node}** ({'attention head' if picked['kind'] == 'head' else 'MLP'}), on this task's scoring "
                "pairs")
    if picked["kind"] == "head":
        st.page_link("pages/1_Attention.py", label=f"Open {node}'s attention pattern", icon="➡️",
                     query_params={"layer": picked["layer"], "head": picked["head"]})
    effects = _direct(bundle, graph, data, bundle.ref, task, n_pairs)
    metrics_row(node_effect_metrics(effects, node))
    tokens = promoted_tokens(bundle, effects, node)
    frame = tokens.to_frame()
    columns = st.columns(2)
    for column, direction in zip(columns, ("promoted", "suppressed"), strict=True):
        column.caption(f"Tokens its mean output {direction[:-1]}s most (direct effect, logits)")
        column.dataframe(frame[frame.direction == direction][["token", "logit_effect"]], hide_index=True,
                         column_config={"logit_effect": st.column_config.NumberColumn(format="%+.3f")})
    download_buttons(frame, f"promoted_tokens_{node}")
    with st.expander("Every node's direct effect on the logit difference (table)"):
        table = effects.to_frame()
        st.dataframe(table, hide_index=True)
        download_buttons(table, "direct_effects")
