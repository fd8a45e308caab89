"""Freed tensors go back to the system (interp_core.budget.map_large_tensors), so a long prompt's activations do
not stay resident after the analysis that made them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

# 50 tensors of 4 MiB, each followed by a small one that is kept (on glibc's heap, right above it when the big
# ones come from the heap too), then the big ones freed: the RSS they leave behind, in MiB
RETAINED = """
import sys, torch
from interp_core.budget import map_large_tensors
if sys.argv[1] == "mapped":
    assert map_large_tensors()
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
warm = torch.ones(1 << 20); del warm  # one big free raises glibc's dynamic threshold to 4 MiB
start = rss_mib()
big, pins = [], []
for _ in range(50):
    big.append(torch.ones(1 << 20))  # [2**20] float32 = 4 MiB
    pins.append(torch.ones(1024))  # 4 KiB, kept
del big
print(rss_mib() - start)
"""


def retained_mib(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", RETAINED, mode], cwd=ROOT, capture_output=True, text=True,
                          check=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    return float(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc; other systems are left as they are")
def test_freed_activations_are_returned_to_the_system():
    assert retained_mib("default") > 150  # glibc alone keeps the 200 MiB below the small tensor
    assert retained_mib("mapped") < 16


def test_tensors_are_mapped_from_the_first_pass_with_a_large_activation(gpt2_bundle, gpt2_small_shaped, monkeypatch):
    """A pass whose largest activation (MLP hidden layer or one layer's attention scores) is below the threshold
    leaves the allocator alone; the first pass at or above it maps large tensors."""
    from interp_core import activations, budget

    calls = []
    monkeypatch.setattr(budget, "map_large_tensors", lambda: calls.append(1))
    activations.run(gpt2_bundle, torch.zeros(2, 16, dtype=torch.long))  # tiny GPT-2: a few KiB per activation
    assert calls == []
    rows = -(-budget.LONG_PASS_BYTES // (4 * 64 * budget.d_mlp(gpt2_small_shaped)))  # [rows, 64, 3072] floats
    budget.map_tensors_if_large(gpt2_small_shaped, rows - 1, 64)
    assert calls == []
    activations.run(gpt2_small_shaped, torch.zeros(rows, 64, dtype=torch.long))
    assert calls == [1]
