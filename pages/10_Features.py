"""Features page: a sparse autoencoder's latents on the sidebar's prompt, one latent's card over a corpus (top
contexts by activation interval, what its decoder direction writes, its density), steering the model by it, and on
the organism the latents that match what the corpus generator knows. Thin: widgets -> cached calls into
interp_core.features -> charts and tables.
"""

import json

import streamlit as st

from interp_core import streamlit_glue as glue
from interp_core.charts import features as charts
from interp_core.charts.tokens import coloured_tokens_html
from interp_core.features import card as cards
from interp_core.features.steering import MODES, steer
from interp_core.features.truth import known_truth
from interp_core.findings.kinds import features_numbers
from interp_core.settings import SHIPPED_MODEL
from interp_core.streamlit_glue import features as shared
from interp_core.tokens import token_labels

st.set_page_config(page_title="Features · Interpretability workbench", layout="wide")
glue.page_header("Features", "A sparse autoencoder (SAE) rewrites one activation of the model as a sum of a few of "
                 "many learned directions, its **features** (latents), which are often easier to name than neurons. "
                 "See which fire on your prompt, read one feature's card (where in a corpus it fires most, what it "
                 "writes to the output), steer the model with it, and on the shipped organism check it against "
                 "labels the corpus generator knows.")
sel = glue.sidebar()
bundle, trace = sel.bundle, sel.trace
choice = shared.sae_choice(bundle)
if choice is None:
    st.info("This model has no SAE yet: load one in SAELens' format or train one in the box above.")
    st.stop()
sae = choice.sae
st.caption(f"{choice.origin}: reads {sae.hook_name}, {sae.d_sae:,} latents, {sae.architecture}"
           + (f" (k = {sae.k})" if sae.k else "") + ".")
shared.quality_panel(choice)


@glue.cached_result()
def cached_prompt(_bundle, _trace, _sae, ref: str, prompt: str, sae_digest: str):
    return cards.top_features(_bundle, _sae, _trace, k=5)


@glue.cached_result()
def cached_table(_bundle, _sae, _rows, ref: str, corpus: str, sae_digest: str):
    return cards.fired_table(_bundle, _sae, _rows, progress=glue.progress_bar("Encoding the corpus..."))


@glue.cached_result()
def cached_card(_bundle, _sae, _table, ref: str, corpus: str, sae_digest: str, latent: int):
    return cards.feature_card(_bundle, _sae, _table, latent)


@glue.cached_result(spinner="Steering...")
def cached_steering(_bundle, _sae, _trace, ref: str, prompt: str, sae_digest: str, latent, mode, amount, positions):
    return steer(_bundle, _sae, _trace.token_ids, latent, mode, amount, positions)


@glue.cached_result(spinner="Matching latents to the generator's labels...")
def cached_truth(_bundle, _sae, _table, ref: str, sae_digest: str):
    from interp_core.organism.token_labels import card_rows

    return known_truth(_bundle, _sae, card_rows(_bundle.tokenizer), _table)


# --- the prompt -----------------------------------------------------------------------------------------------
corpus = shared.corpus_rows(bundle)  # the cards' text; also tells which latents are dense
if corpus is not None:
    rows, corpus_name = corpus
    table = cached_table(bundle, sae, rows, sel.ref, corpus_name, sae.digest)
st.subheader("Your prompt: the most active features at each token")
found = cached_prompt(bundle, trace, sae, sel.ref, sel.prompt, sae.digest)
first = found.specific_latent(table.densities() if corpus is not None else None)
glue.kept("feat_latent", lambda: first, fit=lambda n: min(max(int(n), 0), sae.d_sae - 1), link="latent")
c_pick, c_table = st.columns([2, 3])
latent = int(c_pick.number_input(f"Feature (0 to {sae.d_sae - 1:,})", 0, sae.d_sae - 1, key="feat_latent"))
c_pick.html(coloured_tokens_html(found.tokens, found.latent_values(latent), diverging=False,
                                 legend=f"The prompt coloured by latent {latent}'s activation"))
frame = found.to_frame()
by_rank = frame.pivot(index=["pos", "token"], columns="rank", values="latent")
c_table.dataframe(by_rank.rename(columns=lambda rank: f"#{rank}").reset_index(), hide_index=True, height=240)
c_table.caption("Each token's five most active latents, most active first (the latent numbers).")
glue.download_buttons(frame, "prompt_features")

# --- the feature's card ---------------------------------------------------------------------------------------
st.subheader(f"Latent {latent}'s card")
if corpus is None:
    st.info("Upload a text file for the cards: the contexts where a latent fires are drawn from it.")
    st.stop()
card = cached_card(bundle, sae, table, sel.ref, corpus_name, sae.digest, latent)
glue.metrics_row(shared.card_metrics(card, corpus_name))
if card.dead:
    st.info(f"Latent {latent} never fires on this corpus (a dead latent); its decoder direction is still shown.")
c_hist, c_logits = st.columns(2)
with c_hist:
    glue.draw_chart(charts.activation_histogram, card)
with c_logits:
    glue.draw_chart(charts.logit_effects, card)
shared.contexts(card)
glue.download_buttons(card.to_frame(), f"feature_{latent}_contexts")
st.download_button("Download the card (Neuronpedia's JSON fields)", json.dumps(card.neuronpedia_json(bundle.ref)),
                   file_name=f"feature_{latent}.json", mime="application/json", on_click="ignore",
                   key="feat_card_json")

# --- steering -------------------------------------------------------------------------------------------------
st.subheader(f"Steer the model with latent {latent}")
labels = token_labels(trace.tokens)
glue.kept("feat_mode", lambda: "add", link="steer_mode", options=list(MODES))
glue.kept("feat_amount", lambda: round(2 * max(card.max_activation, 1.0), 1), link="amount")
glue.kept("feat_positions", lambda: [trace.n_pos - 1], link="positions",
          fit=lambda kept: [p for p in kept if 0 <= int(p) < trace.n_pos] or [trace.n_pos - 1])
c_mode, c_amount, c_positions = st.columns([1, 1, 3])
mode = c_mode.radio("Mode", list(MODES), key="feat_mode", horizontal=True,
                    help="add: add amount x the latent's decoder direction. clamp: set the latent's activation to "
                         "amount.")
amount = float(c_amount.number_input("Amount", -1000.0, 1000.0, key="feat_amount", step=1.0))
positions = c_positions.multiselect("At positions", list(range(trace.n_pos)), key="feat_positions",
                                    format_func=labels.__getitem__)
if positions:
    steering = cached_steering(bundle, sae, trace, sel.ref, sel.prompt, sae.digest, latent, mode, amount,
                               tuple(sorted(positions)))
    shared.steering_view(steering)
    glue.draw_chart(charts.steering_chart, steering)
    glue.download_buttons(steering.to_frame(), f"steering_{latent}")
else:
    st.info("Pick at least one position to steer.")

# --- known truth ----------------------------------------------------------------------------------------------
if bundle.ref == SHIPPED_MODEL:
    st.subheader("Known truth: the latent that best matches each label the generator knows")
    truth = cached_truth(bundle, sae, table, sel.ref, sae.digest)
    shared.truth_table(truth)
inputs = {"latent": latent, "mode": mode, "amount": amount, "positions": sorted(positions),
          "sae": choice.folder.name if choice.folder else sae.hook_name}
glue.findings_box(sel, "features", inputs, features_numbers(card, steering if positions else None),
                  checkable="" if choice.shipped else "its SAE was loaded or trained in the session")
