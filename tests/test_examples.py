"""A newcomer on the shipped model: the sidebar's example prompts show each page's known truth, and a prompt outside
what the organism knows gets a notice saying so."""

from __future__ import annotations

import pytest
from shipped import shipped_bundle
from streamlit.testing.v1 import AppTest

from interp_core.components import resid_to_logits
from interp_core.examples import REPEATED, corpus_loss, example_prompts, familiarity
from interp_core.settings import REPO_ROOT
from interp_core.tokens import readable_token, token_texts
from interp_core.trace import run_trace

NEWCOMER = "My favourite food is pizza because"


def top1(bundle, prompt: str) -> str:
    trace = run_trace(bundle, prompt)
    return readable_token(token_texts(bundle, [int(trace.last_logits.argmax())])[0])


def test_each_example_shows_its_known_truth_on_the_organism():
    bundle = shipped_bundle()
    examples = example_prompts(bundle)
    assert top1(bundle, examples["A capital"]) == "␣Paris"
    assert top1(bundle, examples["Indirect object (IOI)"]) == "␣Mary"
    assert top1(bundle, examples["Subject-verb agreement"]) == "␣were"
    trace = run_trace(bundle, examples[REPEATED])
    n = trace.n_pos // 2
    assert trace.n_pos == 2 * n  # every word is one token: two copies of n
    logp = resid_to_logits(bundle, trace.resid[-1, :-1]).log_softmax(-1)
    loss = -logp.gather(-1, trace.token_ids[1:, None])[:, 0]  # [pos - 1] loss of token t + 1
    first, second = loss[: n - 1].mean(), loss[n:].mean()  # predicting copy 1 (after its first token), copy 2
    assert second < 0.2 * first  # the second copy is predicted by induction


def test_a_newcomers_prompt_is_unfamiliar_and_the_examples_are_not():
    bundle = shipped_bundle()
    reference = corpus_loss(bundle)
    assert 0.5 < reference < 3.0  # the organism on its own generated text
    outside = familiarity(bundle, run_trace(bundle, NEWCOMER), NEWCOMER, reference)
    assert outside.unfamiliar and outside.split_share > 0.5
    assert "outside what the model knows" in outside.message
    for prompt in example_prompts(bundle).values():
        assert not familiarity(bundle, run_trace(bundle, prompt), prompt, reference).unfamiliar, prompt


@pytest.fixture
def shipped_default(monkeypatch):
    shipped_bundle()  # skips while the organism is not trained
    monkeypatch.delenv("INTERP_DEFAULT_MODEL", raising=False)
    monkeypatch.delenv("INTERP_HOSTED", raising=False)


def test_the_sidebar_fills_the_prompt_with_an_example_and_tells_a_newcomer_where_the_model_is_lost(shipped_default):
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=300)
    at.query_params["prompt"] = NEWCOMER
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("outside what the model knows" in str(info.value) for info in at.info)
    at.sidebar.selectbox(key="example_prompt").select("Indirect object (IOI)").run()
    assert at.sidebar.text_area(key="prompt").value == example_prompts(shipped_bundle())["Indirect object (IOI)"]
    assert not any("outside what the model knows" in str(info.value) for info in at.info)
