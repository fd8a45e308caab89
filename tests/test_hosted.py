"""Hosted mode: switched on by INTERP_HOSTED or the same key in Streamlit secrets (the environment wins), with
every cap stricter than the local one."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from interp_core.settings import HOSTED_LIMITS, LOCAL_LIMITS

ROOT = Path(__file__).resolve().parent.parent
PROBE = ("from interp_core import streamlit_glue as g; from interp_core.settings import is_hosted, limits; "
         "print(is_hosted(), limits().max_prompt_tokens, g.model_options())")


def run_in(folder: Path, secrets: str | None, **env: str) -> str:
    """Import the glue in a fresh interpreter whose working folder holds `secrets` as .streamlit/secrets.toml."""
    if secrets is not None:
        (folder / ".streamlit").mkdir(exist_ok=True)
        (folder / ".streamlit" / "secrets.toml").write_text(secrets)
    clean = {k: v for k, v in os.environ.items() if k not in ("INTERP_HOSTED", "INTERP_ALLOWED_MODELS",
                                                              "INTERP_DEFAULT_MODEL")}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=folder, capture_output=True, text=True, timeout=300,
                         env={**clean, "PYTHONPATH": str(ROOT), **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(LOCAL_LIMITS)])
def test_every_hosted_cap_is_stricter_than_the_local_one(field):
    assert getattr(HOSTED_LIMITS, field) < getattr(LOCAL_LIMITS, field)


def test_secrets_switch_hosted_mode_on_with_their_allow_list(tmp_path):
    line = run_in(tmp_path, 'INTERP_HOSTED = true\nINTERP_ALLOWED_MODELS = ["gpt2", "distilgpt2"]\n')
    assert line == f"True {HOSTED_LIMITS.max_prompt_tokens} ['organism', 'gpt2', 'distilgpt2']"


def test_the_environment_wins_over_secrets(tmp_path):
    line = run_in(tmp_path, 'INTERP_HOSTED = true\n', INTERP_HOSTED="0")
    assert line.startswith(f"False {LOCAL_LIMITS.max_prompt_tokens} ")
    assert "Local folder..." in line


def test_without_secrets_or_variable_the_app_is_local(tmp_path):
    line = run_in(tmp_path, None)
    assert line.startswith(f"False {LOCAL_LIMITS.max_prompt_tokens} ")
