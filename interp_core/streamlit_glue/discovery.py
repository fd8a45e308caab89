"""The Circuit discovery page's task: the task box and number of pairs (kept, `?task=`), a CSV of the user's own
pairs that survives a page switch, and the task's scoring and held-out pairs, or the message that stops the page."""

from __future__ import annotations

import streamlit as st

from interp_core import discovery
from interp_core.errors import UserInputError
from interp_core.loading import ModelBundle
from interp_core.streamlit_glue.models import cached_result
from interp_core.streamlit_glue.state import kept
from interp_core.streamlit_glue.widgets import kept_upload, show_user_error

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
