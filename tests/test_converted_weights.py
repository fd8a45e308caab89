"""Loading a float32 checkpoint in half precision reads it a chunk at a time (interp_core.converted_weights): the
weights equal transformers' own conversion, and a batched forward's logits equal each row's alone."""

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from interp_core import activations
from interp_core.converted_weights import converted_state_dict
from interp_core.loading import load_model
from interp_core.settings import SHIPPED_MODEL_DIR


def test_converted_state_dict_equals_transformers_conversion():
    state = converted_state_dict(Path(SHIPPED_MODEL_DIR), torch.bfloat16)
    theirs = AutoModelForCausalLM.from_pretrained(SHIPPED_MODEL_DIR, dtype=torch.bfloat16).state_dict()
    assert state is not None and set(state) <= set(theirs)
    for key, tensor in state.items():
        assert tensor.dtype == theirs[key].dtype and torch.equal(tensor, theirs[key]), key


def test_no_conversion_when_stored_in_the_dtype_asked_for():
    assert converted_state_dict(Path(SHIPPED_MODEL_DIR), torch.float32) is None


def test_bfloat16_load_and_batched_logits():
    bundle = load_model("organism", "bfloat16")
    assert bundle.dtype == torch.bfloat16
    ids = torch.randint(0, 100, (4, 9))
    batched = activations.run(bundle, ids).logits  # [batch, 1, d_vocab] from a strided slice of the hidden states
    for row in range(4):
        alone = activations.run(bundle, ids[row:row + 1]).logits
        torch.testing.assert_close(batched[row], alone[0], rtol=0, atol=0.05)
