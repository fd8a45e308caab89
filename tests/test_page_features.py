"""The Features page under AppTest on the shipped organism: an SAE's features on the prompt, a latent's card,
steering, the known-truth table, links, bad input, and a model with no SAE."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from interp_core.features.sae import SAE, save
from interp_core.streamlit_glue.features import SaeChoice, shipped_folders
from tests.helpers import chart_titles
from tests.shipped import shipped_bundle

ROOT = Path(__file__).resolve().parent.parent
APP, PAGE = str(ROOT / "app.py"), "pages/10_Features.py"
HOOK = "blocks.2.hook_resid_pre"


def random_sae(d_in: int = 128, d_sae: int = 256, k: int = 8, seed: int = 0) -> SAE:
    generator = torch.Generator().manual_seed(seed)
    w_dec = torch.nn.functional.normalize(torch.randn(d_sae, d_in, generator=generator), dim=-1)
    return SAE(W_enc=w_dec.T.clone(), b_enc=torch.zeros(d_sae), W_dec=w_dec, b_dec=torch.zeros(d_in),
               architecture="topk", hook_name=HOOK, k=k)


def open_page(query: dict | None = None, sae: SAE | None = None, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600)
    if sae is not None:
        at.session_state["sae::organism"] = SaeChoice(sae, "a test SAE", False)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    for name, value in (query or {}).items():
        at.query_params[name] = value
    return at.switch_page(PAGE).run()


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.fixture()
def organism(monkeypatch):
    monkeypatch.delenv("INTERP_DEFAULT_MODEL", raising=False)
    return shipped_bundle()


def test_the_page_shows_the_prompts_features_a_card_steering_and_known_truth(organism):
    at = open_page({"latent": "7"}, sae=random_sae())
    assert not at.exception and not at.error, [e.message for e in at.exception]
    assert at.number_input(key="feat_latent").value == 7 and at.query_params["latent"] == "7"
    shown = chart_titles(at)
    assert "Latent 7: activations where it fires" in shown and "What its decoder direction writes" in shown
    assert "Next-token probabilities" in shown
    assert float(metric(at, "Fires on").rstrip("%")) > 0
    labels = set(next(d.value for d in at.dataframe if "label" in d.value.columns).label)
    assert labels == {"country", "capital", "ioi_name", "plural_subject", "second_copy"}
    assert len(at.code) == 2  # the two continuations


def test_steering_by_clamping_to_zero_and_a_bad_link_value(organism):
    at = open_page({"latent": "zzz", "steer_mode": "clamp", "amount": "0"}, sae=random_sae())
    assert not at.exception
    assert any("latent" in w.value for w in at.warning)  # the bad latent is named, the default runs
    assert at.radio(key="feat_mode").value == "clamp"
    at.multiselect(key="feat_positions").set_value([0, 1]).run()
    assert not at.exception and at.query_params["positions"] == "[0, 1]"


def test_a_latent_that_never_fires_says_so(organism):
    sae = random_sae()
    dead = SAE(W_enc=sae.W_enc, b_enc=sae.b_enc.clone().index_fill_(0, torch.tensor([3]), -1e6), W_dec=sae.W_dec,
               b_dec=sae.b_dec, architecture="topk", hook_name=HOOK, k=8)
    at = open_page({"latent": "3"}, sae=dead)
    assert not at.exception
    assert any("never fires" in i.value for i in at.info)


def test_a_folder_that_is_not_an_sae_gets_a_plain_message_and_a_good_one_loads(organism, tmp_path):
    at = open_page(sae=random_sae())
    at.text_input(key="sae_folder").set_value(str(tmp_path / "missing")).run()
    assert not at.exception and any("is not a folder" in e.value for e in at.error)
    save(random_sae(d_sae=64, k=4, seed=1), tmp_path / "sae")
    at.text_input(key="sae_folder").set_value(str(tmp_path / "sae")).run()
    assert not at.exception and not at.error
    assert any("64 latents" in c.value for c in at.caption)


def test_a_model_with_no_sae_says_how_to_get_one(monkeypatch, saved_tiny_gpt2):
    monkeypatch.setenv("INTERP_DEFAULT_MODEL", str(saved_tiny_gpt2))
    at = open_page()
    assert not at.exception
    assert any("has no SAE yet" in i.value for i in at.info)


def test_the_shipped_sae_opens_by_default_with_its_quality(organism):
    if not shipped_folders():
        pytest.skip("the shipped organism SAE has not been trained yet")
    at = open_page()
    assert not at.exception and not at.error
    assert any("the shipped SAE" in c.value for c in at.caption)
    assert float(metric(at, "Explained variance")) >= 0.95
