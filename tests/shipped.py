"""Access to the shipped model organism for tests that check known truths on it."""

from functools import lru_cache

import pytest

from interp_core.settings import SHIPPED_MODEL, SHIPPED_MODEL_DIR


@lru_cache(maxsize=1)
def _load_shipped():
    from interp_core.loading import load_model

    return load_model(SHIPPED_MODEL)


def shipped_bundle():
    """The shipped organism's ModelBundle, loaded once per test session (skips only while it is not trained yet)."""
    if not (SHIPPED_MODEL_DIR / "model.safetensors").exists():
        pytest.skip("the shipped model organism has not been trained yet")
    return _load_shipped()

