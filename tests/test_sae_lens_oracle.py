"""Our SAE files and arithmetic against SAELens' own (a bench/test requirement: `make .venv/.stamp-bench` installs
sae-lens 6.54.12 into .venv/sae-lens; requirements-bench.txt says why apart). SAELens needs transformer-lens 3.x and
this venv has 4.x, so SAELens runs in a subprocess with its folder first on PYTHONPATH: it loads the folders we
save with `SAE.load_from_disk` and encodes and decodes the same activations, and it saves SAEs of its own (random
weights) that our loader must read to the same latents. Skipped when SAELens is not installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from interp_core import activations
from interp_core.features import sae

SAE_LENS_SITE = Path(__file__).resolve().parent.parent / ".venv" / "sae-lens"
HOOK = "blocks.0.hook_resid_pre"
PROMPT = "When Mary and John went to the store, John gave a drink to Mary."
CASES = ("topk", "standard", "jumprelu", "topk_rescaled")  # topk_rescaled: rescale_acts_by_decoder_norm (its side)

ORACLE = r'''
import sys, warnings
warnings.filterwarnings("ignore")
try:
    import torch
    from safetensors.torch import load_file, save_file
    from sae_lens import (SAE, JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE,
                          TopKSAEConfig)
    from sae_lens.saes.sae import SAEMetadata
except ImportError as exc:
    print(exc)
    sys.exit(77)
ours, theirs, x_path, out_path, hook = sys.argv[1:6]
x = load_file(x_path)["x"]
out = {}
classes = {"topk": (TopKSAE, TopKSAEConfig, {"k": 4}), "standard": (StandardSAE, StandardSAEConfig, {}),
           "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {}),
           "topk_rescaled": (TopKSAE, TopKSAEConfig, {"k": 4, "rescale_acts_by_decoder_norm": True})}
torch.manual_seed(0)
for case, (cls, config, options) in classes.items():
    if case != "topk_rescaled":
        loaded = SAE.load_from_disk(f"{ours}/{case}")
        assert type(loaded) is cls, type(loaded)
        f = loaded.encode(x)
        out[f"ours_{case}_f"], out[f"ours_{case}_x_hat"] = f, loaded.decode(f)
    own = cls(config(d_in=x.shape[-1], d_sae=64, metadata=SAEMetadata(hook_name=hook, model_name="tiny"), **options))
    with torch.no_grad():
        for name, param in own.named_parameters():
            if name != "W_dec":
                param.copy_(torch.rand_like(param) * 0.2 if name == "threshold" else torch.randn_like(param) * 0.1)
    own.save_model(f"{theirs}/{case}")
    f = own.encode(x)
    out[f"theirs_{case}_f"], out[f"theirs_{case}_x_hat"] = f, own.decode(f)
save_file({name: tensor.detach().contiguous() for name, tensor in out.items()}, out_path)
'''


def _random_sae(architecture: str, d_in: int, seed: int) -> sae.SAE:
    generator = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(64, d_in, generator=generator)
    return sae.SAE(W_enc=torch.randn(d_in, 64, generator=generator) / d_in ** 0.5,
                   b_enc=0.1 * torch.randn(64, generator=generator), W_dec=W_dec / W_dec.norm(dim=-1, keepdim=True),
                   b_dec=0.1 * torch.randn(d_in, generator=generator), architecture=architecture, hook_name=HOOK,
                   k=4 if architecture == "topk" else None,
                   threshold=0.2 * torch.rand(64, generator=generator) if architecture == "jumprelu" else None)


@pytest.fixture(scope="module")
def oracle(gpt2_bundle, tmp_path_factory):
    """(our SAEs by architecture, activations x [1, pos, d_model], SAELens' outputs, its saved folders)."""
    if not (SAE_LENS_SITE / "sae_lens").is_dir():
        pytest.skip("sae_lens is not installed (make .venv/.stamp-bench installs it into .venv/sae-lens)")
    root = tmp_path_factory.mktemp("sae_lens_oracle")
    ids = torch.tensor([gpt2_bundle.tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        x = activations.run(gpt2_bundle, ids, record=[HOOK]).acts[HOOK]
    save_file({"x": x.contiguous()}, str(root / "x.safetensors"))
    ours = {arch: _random_sae(arch, gpt2_bundle.d_model, seed) for seed, arch in enumerate(sae.ARCHITECTURES)}
    for arch, model in ours.items():
        sae.save(model, root / "ours" / arch)
    env = {**os.environ, "PYTHONPATH": str(SAE_LENS_SITE), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", ORACLE, str(root / "ours"), str(root / "theirs"),
                           str(root / "x.safetensors"), str(root / "out.safetensors"), HOOK],
                          env=env, cwd=root, capture_output=True, text=True, timeout=300)
    if done.returncode == 77:
        pytest.skip(f"sae_lens does not import from {SAE_LENS_SITE}: {done.stdout.strip()}")
    assert done.returncode == 0, done.stderr[-3000:]
    return ours, x, load_file(str(root / "out.safetensors")), root / "theirs"


@pytest.mark.parametrize("architecture", sae.ARCHITECTURES)
def test_sae_lens_encodes_our_saved_sae_as_we_do(oracle, architecture):
    ours, x, out, _ = oracle
    f = ours[architecture].encode(x)
    assert (f > 0).any()
    assert torch.allclose(f, out[f"ours_{architecture}_f"], atol=1e-5, rtol=0)
    assert torch.allclose(ours[architecture].decode(f), out[f"ours_{architecture}_x_hat"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_we_load_an_sae_saved_by_sae_lens_to_its_own_encoding(oracle, gpt2_bundle, case):
    _, x, out, theirs = oracle
    loaded = sae.load(gpt2_bundle, theirs / case)
    assert loaded.rescale_acts_by_decoder_norm == (case == "topk_rescaled")
    f = loaded.encode(x)
    assert (f > 0).any()
    assert torch.allclose(f, out[f"theirs_{case}_f"], atol=1e-5, rtol=0)
    assert torch.allclose(loaded.decode(f), out[f"theirs_{case}_x_hat"], atol=1e-5, rtol=0)
