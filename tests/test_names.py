"""TransformerLens activation names (interp_core.names): act_name builds exactly the names the activation API
accepts, and each one parses back to its kind and layer."""

from __future__ import annotations

import pytest

from interp_core import activations
from interp_core.names import act_name

KINDS = ["embed", "pos_embed", "resid_pre", "q", "k", "v", "pattern", "z", "attn_out", "mlp_in", "post", "mlp_out",
         "resid_post", "ln_final"]  # every kind activations.parse_name accepts
GLOBAL = {"embed", "pos_embed", "ln_final"}  # not per block


@pytest.mark.parametrize("kind", KINDS)
def test_every_name_act_name_builds_parses_through_the_activation_api(gpt2_bundle, kind):
    layer = None if kind in GLOBAL else gpt2_bundle.n_layers - 1
    parsed = activations.parse_name(gpt2_bundle, act_name(kind, layer))
    assert (parsed.kind, parsed.layer, parsed.head) == (kind, layer, None)


def test_act_name_knows_exactly_the_kinds_the_activation_api_accepts():
    assert set(KINDS) == set(activations.NAME_KINDS.values())
    assert act_name("post", 2) == "blocks.2.mlp.hook_post"  # the MLP neurons, as in TransformerLens
    for kind in ("attn_scores", "result", "resid_mid"):  # TransformerLens names the activation API does not record
        with pytest.raises(ValueError, match="Unknown activation kind"):
            act_name(kind, 0)
