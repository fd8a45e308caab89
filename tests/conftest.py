"""Shared fixtures: tiny bundles of every supported family (built once per session) and a saved model folder.

Other test files may use `tiny_bundle` (parametrised over the families), `tiny_bundles` (dict by family),
`gpt2_bundle`, `saved_tiny_gpt2` (a folder path), or import helpers directly: `from helpers import ...`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so test files can `import helpers`

from helpers import FAMILIES, make_tiny_bundle, make_tiny_tokenizer, save_tiny_model  # noqa: E402

from interp_core.loading import bundle_from_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bundles():
    """{family: ModelBundle} for every supported family; read-only, shared by the session."""
    return {family: make_tiny_bundle(family) for family in FAMILIES}


@pytest.fixture(params=FAMILIES)
def tiny_bundle(request, tiny_bundles):
    """One tiny ModelBundle per supported family (the test runs once per family)."""
    return tiny_bundles[request.param]


@pytest.fixture(scope="session")
def gpt2_bundle(tiny_bundles):
    """The tiny GPT-2 bundle."""
    return tiny_bundles["gpt2"]


@pytest.fixture(scope="session")
def saved_tiny_gpt2(tmp_path_factory):
    """A folder holding a tiny GPT-2 (model.safetensors, config, tokenizer) that load_model accepts."""
    return save_tiny_model("gpt2", tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def gpt2_small_shaped():
    """A randomly initialised model of GPT-2 small's shape (12 layers, 12 heads, d_model 768, 50,257-token
    unembedding) with the tiny test tokenizer (its ids are a subset of the vocabulary)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return bundle_from_model(GPT2LMHeadModel(GPT2Config()), make_tiny_tokenizer(), "gpt2-small-shaped")
