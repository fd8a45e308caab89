"""The warm-switch floor that replays our pages' recorded messages (bench/replay.py): every page is recorded with
what it draws (its title, its charts, its sidebar links), and the replay app sends exactly those messages again,
each at the same place in the page, with none of our code running."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import local_script_runner as runner

from bench.replay import record_pages, write_replay_app

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("app.py", "pages/3_Probing.py", "pages/5_Circuits.py")


def comparable(raw: bytes) -> tuple:
    """A recorded delta without what a replay may change: the message hash, the run and the page links' hashes."""
    msg = ForwardMsg()
    msg.ParseFromString(raw)
    if msg.delta.new_element.WhichOneof("type") == "page_link":
        msg.delta.new_element.page_link.page_script_hash = ""
    return tuple(msg.metadata.delta_path), msg.delta.SerializeToString(deterministic=True)


def element_kinds(raws: list[bytes]) -> list[str]:
    kinds = []
    for raw in raws:
        msg = ForwardMsg()
        msg.ParseFromString(raw)
        kinds.append(msg.delta.new_element.WhichOneof("type") or "")
    return kinds


def replayed(app: Path, path: str, monkeypatch) -> list[bytes]:
    """The delta messages the replay page `path` sends (AppTest cannot parse widgets it did not register, so the
    messages are kept and an empty tree is handed back)."""
    captured = []
    parse = runner.parse_tree_from_messages
    monkeypatch.setattr(runner, "parse_tree_from_messages", lambda msgs: (captured.append(list(msgs)), parse([]))[1])
    at = AppTest.from_file(str(app / "app.py"), default_timeout=60)
    at.run()
    at.switch_page(path).run()
    monkeypatch.setattr(runner, "parse_tree_from_messages", parse)
    return [m.SerializeToString() for m in captured[-1] if m.WhichOneof("type") == "delta"]


def test_every_page_is_recorded_with_what_it_draws_and_replayed_as_recorded(saved_tiny_gpt2, tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_DEFAULT_MODEL", str(saved_tiny_gpt2))
    recordings = record_pages(str(saved_tiny_gpt2))
    assert set(recordings) == {"app.py", *(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))}
    ours = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    ours.run()
    app = write_replay_app(tmp_path, recordings)
    for path in PAGES:
        ours.switch_page(path).run()
        kinds = element_kinds(recordings[path])
        n_charts = len(ours.get("arrow_vega_lite_chart") + ours.get("vega_lite_chart"))
        assert n_charts and kinds.count("arrow_vega_lite_chart") + kinds.count("vega_lite_chart") == n_charts, path
        assert kinds.count("page_link") >= len(ours.sidebar.get("page_link")) > 0, path
        title = json.dumps(ours.title[0].value)[1:-1]
        assert any(title.encode() in raw for raw in recordings[path]), path
        assert [comparable(m) for m in replayed(app, path, monkeypatch)] == [comparable(m) for m in recordings[path]]
