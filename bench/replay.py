"""A floor for the warm page switch that draws exactly what our pages draw, with none of our Python: each of our
pages' warm run is recorded under Streamlit's AppTest (the ForwardMsgs its script sends: every element, chart spec,
Arrow table and widget, sidebar included), and a replay app with the same page files sends those messages again.

    >>> recordings = record_pages(model_ref)          # {page file: [serialized ForwardMsg, ...]}
    >>> app_dir = write_replay_app(folder, recordings)  # `streamlit run app.py` there replays them

A switch between two replayed pages costs what Streamlit and the browser need to deliver and draw our pages'
elements; ours minus that is the time our own code takes. The replayed messages are the recorded ones with their
run identity and hashes cleared (Streamlit fills them in again) and each sidebar page link pointed at the replay
app's page of the same name. Internal Streamlit APIs are used here, in the bench only: `enqueue_message` and the
AppTest script runner's message list.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_REPLAY_PAGE = '''import json
from pathlib import Path

import streamlit as st
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.scriptrunner_utils.script_run_context import enqueue_message, get_script_run_ctx

st.set_page_config(page_title="Replay", layout="wide")
pages = get_script_run_ctx().pages_manager.get_pages().values()
hashes = {info.get("url_pathname", info.get("page_name", "")): info["page_script_hash"] for info in pages}
hashes[""] = next(info["page_script_hash"] for info in pages if info["script_path"].endswith("app.py"))
for raw in json.loads(Path(__file__).with_suffix(".json").read_text()):
    msg = ForwardMsg()
    msg.ParseFromString(bytes.fromhex(raw))
    element = msg.delta.new_element
    if element.WhichOneof("type") == "page_link":
        element.page_link.page_script_hash = hashes.get(element.page_link.page, "")
    enqueue_message(msg)
'''


def record_pages(model_ref: str, timeout_s: float = 600.0) -> dict[str, list[bytes]]:
    """{page file relative to the repo root: the delta messages of its warm run}, for app.py and pages/*.py,
    recorded under AppTest on `model_ref` (each page visited once to fill the caches, then run again)."""
    import os

    from streamlit.testing.v1 import AppTest
    from streamlit.testing.v1 import local_script_runner as runner

    captured: list[list] = []
    parse = runner.parse_tree_from_messages

    def keep(messages):
        captured.append(list(messages))
        return parse(messages)

    before = os.environ.get("INTERP_DEFAULT_MODEL")
    os.environ["INTERP_DEFAULT_MODEL"] = model_ref
    runner.parse_tree_from_messages = keep
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout_s)
        at.run()
        recorded = {}
        for path in ["app.py", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))]:
            at.switch_page(path).run()
            at.run()  # warm: every analysis of this page is cached now
            recorded[path] = [m.SerializeToString() for m in captured[-1] if _is_delta(m)]
    finally:
        runner.parse_tree_from_messages = parse
        if before is None:
            os.environ.pop("INTERP_DEFAULT_MODEL")
        else:
            os.environ["INTERP_DEFAULT_MODEL"] = before
    return recorded


def _is_delta(msg) -> bool:
    """An element or block of the page (not the run's bookkeeping: new session, script finished, page config)."""
    return msg.WhichOneof("type") == "delta"


def write_replay_app(folder: Path, recordings: dict[str, list[bytes]]) -> Path:
    """The replay app under `folder`: the same page files as ours (so the same URLs and link labels), each
    sending its recording, and our .streamlit/config.toml."""
    (folder / "pages").mkdir(parents=True, exist_ok=True)
    (folder / ".streamlit").mkdir(exist_ok=True)
    config = ROOT / ".streamlit" / "config.toml"
    if config.is_file():
        (folder / ".streamlit" / "config.toml").write_text(config.read_text())
    for path, messages in recordings.items():
        script = folder / path
        script.write_text(_REPLAY_PAGE)
        script.with_suffix(".json").write_text(json.dumps([m.hex() for m in messages]))
    return folder
