"""A sparse autoencoder on one named activation, in SAELens' architectures, weight layout and folder format.

SAELens 6.x (`sae_lens/saes/topk_sae.py`, `standard_sae.py`, `jumprelu_sae.py`), with h the pre-activations:

    h = (x - b_dec) @ W_enc + b_enc                  [..., d_sae]  (b_dec subtracted when apply_b_dec_to_input)
    topk:      f = TopK_k(ReLU(h))                   at most k non-zeros per token (Gao et al. 2024)
    standard:  f = ReLU(h)                           (SAELens' "standard", the ReLU SAE)
    jumprelu:  f = ReLU(h) * (h > threshold)         (Rajamanoharan et al. 2024; BatchTopK's inference form)
    x_hat = f @ W_dec + b_dec                        [..., d_in]

W_enc is [d_in, d_sae] and W_dec [d_sae, d_in], as SAELens stores them. A TopK SAE with
`rescale_acts_by_decoder_norm` multiplies h by the decoder rows' norms before TopK and divides f by them before
decoding (SAELens' option). A folder is SAELens' `cfg.json` + `sae_weights.safetensors` (tensors W_enc, b_enc,
W_dec, b_dec and, for jumprelu, threshold); only safetensors are read, never a pickle.

    >>> sae = load(bundle, "saes/blocks.8.hook_resid_pre")   # checked: hook name and width fit the model
    >>> f = sae.encode(acts)                                 # acts [batch, pos, d_in] -> [batch, pos, d_sae]
    >>> save(sae, folder)                                    # SAELens.SAE.load_from_disk(folder) reads it
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from interp_core import activations
from interp_core.errors import UserInputError
from interp_core.loading import ModelBundle

ARCHITECTURES = ("topk", "standard", "jumprelu")
CFG_FILE, WEIGHTS_FILE = "cfg.json", "sae_weights.safetensors"  # SAELens' constants.py
# The SAELens release whose cfg.json this writes (tests/test_sae_lens_oracle.py reads it back with that library).
# SAELens reads a cfg without a version, or with one before 6.0, in its older format.
SAELENS_FORMAT_VERSION = "6.54.12"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


class SAEFileError(UserInputError):
    """An SAE folder that cannot be read, or whose SAE does not fit the model."""


@dataclass(frozen=True, eq=False)
class SAE:
    """One SAE's weights (float32, CPU) and the options that change its arithmetic; see the module docstring."""

    W_enc: torch.Tensor  # [d_in, d_sae]
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_in]
    b_dec: torch.Tensor  # [d_in]
    architecture: str  # one of ARCHITECTURES
    hook_name: str  # the activation it reads, a TransformerLens name ("blocks.2.hook_resid_pre")
    k: int | None = None  # topk: latents kept per token
    threshold: torch.Tensor | None = None  # jumprelu: [d_sae]
    apply_b_dec_to_input: bool = True
    rescale_acts_by_decoder_norm: bool = False  # topk only
    metadata: dict = field(default_factory=dict)  # SAELens' cfg metadata as read (model_name, ...), plus ours

    def __post_init__(self) -> None:
        d_in, d_sae = self.W_enc.shape
        shapes = {"b_enc": (self.b_enc, (d_sae,)), "W_dec": (self.W_dec, (d_sae, d_in)), "b_dec": (self.b_dec, (d_in,))}
        if self.architecture == "jumprelu":
            shapes["threshold"] = (self.threshold, (d_sae,))
        for name, (tensor, shape) in shapes.items():
            if tensor is None or tuple(tensor.shape) != shape:
                raise ValueError(f"SAE.{name} is {None if tensor is None else tuple(tensor.shape)}, expected {shape}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"Unknown SAE architecture {self.architecture!r}; known: {', '.join(ARCHITECTURES)}")
        if self.architecture == "topk" and not (isinstance(self.k, int) and 0 < self.k <= d_sae):
            raise ValueError(f"A TopK SAE needs k from 1 to d_sae = {d_sae}, not {self.k!r}")

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @cached_property
    def digest(self) -> str:
        """A fingerprint of the weights and options (results computed with this SAE are cached under it)."""
        tensors = [self.W_enc, self.b_enc, self.W_dec, self.b_dec]
        tensors += [] if self.threshold is None else [self.threshold]
        data = torch.cat([t.flatten() for t in tensors]).float().numpy().tobytes()
        options = f"{self.architecture}|{self.k}|{self.apply_b_dec_to_input}|{self.rescale_acts_by_decoder_norm}"
        return hashlib.sha256(data + options.encode()).hexdigest()[:16]

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """h [..., d_sae] for activations x [..., d_in] (computed in float32)."""
        x = x.float()
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        hidden = x @ self.W_enc + self.b_enc
        if self.rescale_acts_by_decoder_norm:
            hidden = hidden * self.W_dec.norm(dim=-1)
        return hidden

    def activate(self, hidden: torch.Tensor) -> torch.Tensor:
        """f [..., d_sae] from pre-activations h [..., d_sae] (the architecture's activation function)."""
        if self.architecture == "topk":
            values, indices = hidden.topk(self.k, dim=-1, sorted=False)
            return torch.zeros_like(hidden).scatter_(-1, indices, values.relu())
        if self.architecture == "jumprelu":
            return hidden.relu() * (hidden > self.threshold).to(hidden.dtype)
        return hidden.relu()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latents f [..., d_sae] (float32) of activations x [..., d_in]."""
        return self.activate(self.pre_activations(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """The reconstruction x_hat [..., d_in] (float32) of latents f [..., d_sae]."""
        f = f.float()
        if self.rescale_acts_by_decoder_norm:
            f = f / self.W_dec.norm(dim=-1)
        return f @ self.W_dec + self.b_dec

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)), [..., d_in], in x's dtype (so it can replace the activation in a forward pass)."""
        return self.decode(self.encode(x)).to(x.dtype)


# -- files ------------------------------------------------------------------------------------------------------


def save(sae: SAE, folder: Path | str, metadata: dict | None = None) -> None:
    """`sae` as SAELens 6.x writes an inference SAE (`SAE.save_model`): cfg.json and sae_weights.safetensors
    (float32). `metadata` is merged into the cfg's metadata (SAELens keeps unknown metadata keys)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold
    save_file({name: t.detach().float().contiguous() for name, t in tensors.items()}, str(folder / WEIGHTS_FILE))
    meta = {"sae_lens_version": SAELENS_FORMAT_VERSION, "sae_lens_training_version": SAELENS_FORMAT_VERSION,
            **sae.metadata, **(metadata or {}), "hook_name": sae.hook_name}
    cfg = {"d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": sae.apply_b_dec_to_input, "normalize_activations": "none",
           "reshape_activations": "none", "metadata": meta}
    if sae.architecture == "topk":
        cfg |= {"k": sae.k, "rescale_acts_by_decoder_norm": sae.rescale_acts_by_decoder_norm}
    cfg["architecture"] = sae.architecture
    (folder / CFG_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


def load(bundle: ModelBundle, folder: Path | str) -> SAE:
    """The SAE in `folder` (SAELens' format, 6.x or the older one with `hook_point`), checked against `bundle`:
    its hook name is an activation the model has and `d_in` is that activation's width. Raises SAEFileError with
    a plain message for a missing file, a pickle, an unknown architecture, an option not implemented here or a
    mismatched shape."""
    folder = Path(folder)
    cfg = _read_cfg(folder)
    architecture, k = _architecture(cfg, folder)
    hook_name = _hook_name(cfg, folder)
    _check_options(cfg, folder)
    tensors = _read_weights(folder, architecture)
    d_in, d_sae = tensors["W_enc"].shape
    if (cfg.get("d_in"), cfg.get("d_sae")) != (d_in, d_sae):
        raise SAEFileError(f"{folder / CFG_FILE} says d_in {cfg.get('d_in')} and d_sae {cfg.get('d_sae')}, but "
                           f"W_enc in {WEIGHTS_FILE} is {d_in} x {d_sae}.")
    width = activation_width(bundle, hook_name)
    if d_in != width:
        raise SAEFileError(f"The SAE in {folder} reads {d_in}-wide activations, but {hook_name} of "
                           f"{bundle.ref} is {width} wide: it was trained on another model.")
    try:
        return SAE(**tensors, architecture=architecture, hook_name=hook_name, k=k,
                   apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
                   rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
                   metadata=dict(cfg.get("metadata") or {}))
    except ValueError as exc:
        raise SAEFileError(f"The SAE in {folder} is inconsistent: {exc}.") from exc


def activation_width(bundle: ModelBundle, hook_name: str) -> int:
    """The last dimension of activation `hook_name` of `bundle` (one forward pass of one token), which must be
    [batch, pos, width]. Raises SAEFileError for a name the model does not have or of another shape."""
    try:
        activations.parse_name(bundle, hook_name)
    except ValueError as exc:
        raise SAEFileError(f"{hook_name!r} is not an activation of {bundle.ref}: {exc}.") from exc
    with torch.no_grad():
        act = activations.run(bundle, torch.zeros(1, 1, dtype=torch.long), record=[hook_name],
                              fused_attention="pattern" not in hook_name).acts[hook_name]
    if act.dim() != 3:
        raise SAEFileError(f"{hook_name} is {act.dim()}-dimensional; an SAE here reads a [batch, pos, width] "
                           f"activation (for one head's hook_z or hook_q, name the head: ...hook_z[0]).")
    return int(act.shape[-1])


def _read_cfg(folder: Path) -> dict:
    if not folder.is_dir():
        raise SAEFileError(f"{folder} is not a folder: an SAE is a folder with {CFG_FILE} and {WEIGHTS_FILE}.")
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not (folder / WEIGHTS_FILE).is_file():
        found = f"; it holds {', '.join(pickles)}, a pickle, which is never read (it could run code)" if pickles else ""
        raise SAEFileError(f"{folder} has no {WEIGHTS_FILE}{found}. Save the SAE with SAELens (safetensors) and "
                           f"upload that folder.")
    try:
        cfg = json.loads((folder / CFG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SAEFileError(f"{folder} has no readable {CFG_FILE} ({exc}).") from exc
    if not isinstance(cfg, dict):
        raise SAEFileError(f"{folder / CFG_FILE} is not a JSON object.")
    return cfg


def _architecture(cfg: dict, folder: Path) -> tuple[str, int | None]:
    """(architecture, k): SAELens 6.x's `architecture`, or the older format's activation_fn(_str) "topk"."""
    activation_fn = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    older_k = (cfg.get("activation_fn_kwargs") or {}).get("k")
    architecture = cfg.get("architecture", "topk" if activation_fn == "topk" else "standard")
    if architecture == "standard" and activation_fn not in ("relu", None):
        raise SAEFileError(f"{folder}: activation function {activation_fn!r} is not supported (ReLU or TopK).")
    if architecture not in ARCHITECTURES:
        raise SAEFileError(f"{folder} holds a {architecture!r} SAE; supported architectures: "
                           f"{', '.join(ARCHITECTURES)} (SAELens' names).")
    k = cfg.get("k", older_k) if architecture == "topk" else None
    if architecture == "topk" and not isinstance(k, int):
        raise SAEFileError(f"{folder / CFG_FILE} names a TopK SAE without an integer k.")
    return architecture, k


def _hook_name(cfg: dict, folder: Path) -> str:
    metadata = cfg.get("metadata") or {}
    name = metadata.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    if not isinstance(name, str):
        raise SAEFileError(f"{folder / CFG_FILE} does not say which activation the SAE reads (metadata.hook_name).")
    return name


def _check_options(cfg: dict, folder: Path) -> None:
    """Refuse SAELens options whose arithmetic is not implemented here."""
    metadata = cfg.get("metadata") or {}
    normalize = cfg.get("normalize_activations", "none")
    if normalize not in ("none", None, False):
        raise SAEFileError(f"{folder}: normalize_activations {normalize!r} is not supported; fold the scaling into "
                           f"the weights first (SAELens: fold_activation_norm_scaling_factor) so it is 'none'.")
    if cfg.get("reshape_activations", "none") != "none":
        raise SAEFileError(f"{folder}: reshape_activations {cfg['reshape_activations']!r} is not supported; SAEs "
                           f"on one head's activation (...hook_z[h]) are.")
    head = metadata.get("hook_head_index", cfg.get("hook_head_index", cfg.get("hook_point_head_index")))
    if head is not None:
        raise SAEFileError(f"{folder}: hook_head_index is not supported; name the head in the hook name instead.")
    if cfg.get("finetuning_scaling_factor"):
        raise SAEFileError(f"{folder}: a finetuning scaling factor is not supported.")
    if cfg.get("rescale_acts_by_decoder_norm") and cfg.get("architecture") != "topk":
        raise SAEFileError(f"{folder}: rescale_acts_by_decoder_norm is only defined for TopK SAEs.")


def _read_weights(folder: Path, architecture: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    names = ["W_enc", "b_enc", "W_dec", "b_dec"] + (["threshold"] if architecture == "jumprelu" else [])
    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="pt", device="cpu") as handle:
            stored = set(handle.keys())
            missing, extra = set(names) - stored, stored - set(names) - {"scaling_factor"}
            if missing or extra:
                raise SAEFileError(f"{folder / WEIGHTS_FILE} holds {', '.join(sorted(stored))}; a {architecture} "
                                   f"SAE has exactly {', '.join(names)}.")
            tensors = {name: handle.get_tensor(name).float() for name in names}
            scaling = handle.get_tensor("scaling_factor") if "scaling_factor" in stored else None
    except (SafetensorError, OSError) as exc:
        raise SAEFileError(f"{folder / WEIGHTS_FILE} is not a readable safetensors file ({exc}).") from exc
    if scaling is not None and not torch.all(scaling == 1):
        raise SAEFileError(f"{folder / WEIGHTS_FILE} has a scaling factor other than 1, which is not supported.")
    if tensors["W_enc"].dim() != 2:
        raise SAEFileError(f"W_enc in {folder / WEIGHTS_FILE} is not a matrix.")
    return tensors
