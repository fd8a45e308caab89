"""Activation names in the TransformerLens scheme, built in one place.

>>> act_name("pattern", 3)
'blocks.3.attn.hook_pattern'
>>> act_name("embed")
'hook_embed'
"""

from __future__ import annotations

# kind -> (name template, shape of the activation for one prompt)
_NAMES: dict[str, tuple[str, str]] = {
    "embed": ("hook_embed", "[pos, d_model]"),
    "pos_embed": ("hook_pos_embed", "[pos, d_model]"),
    "resid_pre": ("blocks.{layer}.hook_resid_pre", "[pos, d_model]"),
    "q": ("blocks.{layer}.attn.hook_q", "[pos, head, d_head]"),
    "k": ("blocks.{layer}.attn.hook_k", "[pos, head, d_head]"),
    "v": ("blocks.{layer}.attn.hook_v", "[pos, head, d_head]"),
    "attn_scores": ("blocks.{layer}.attn.hook_attn_scores", "[head, query_pos, key_pos]"),
    "pattern": ("blocks.{layer}.attn.hook_pattern", "[head, query_pos, key_pos]"),
    "z": ("blocks.{layer}.attn.hook_z", "[pos, head, d_head]"),
    "result": ("blocks.{layer}.attn.hook_result", "[pos, head, d_model]"),
    "attn_out": ("blocks.{layer}.hook_attn_out", "[pos, d_model]"),
    "resid_mid": ("blocks.{layer}.hook_resid_mid", "[pos, d_model]"),
    "mlp_out": ("blocks.{layer}.hook_mlp_out", "[pos, d_model]"),
    "resid_post": ("blocks.{layer}.hook_resid_post", "[pos, d_model]"),
    "ln_final": ("ln_final.hook_normalized", "[pos, d_model]"),
}
_ALIASES = {"normalized": "ln_final", "ln_final.hook_normalized": "ln_final", "attn": "pattern"}


def act_kinds() -> list[str]:
    """The kinds `act_name` accepts."""
    return list(_NAMES)


def act_shape(kind: str) -> str:
    """The shape of the named activation for one prompt, e.g. "[head, query_pos, key_pos]"."""
    return _NAMES[_ALIASES.get(kind, kind)][1]


def act_name(kind: str, layer: int | None = None) -> str:
    """The TransformerLens name of activation `kind` (at `layer` for per-block kinds).

    Raises ValueError for an unknown kind, a per-block kind without a layer, or a layer for a global kind.
    """
    kind = _ALIASES.get(kind, kind)
    if kind not in _NAMES:
        raise ValueError(f"Unknown activation kind {kind!r}; known: {', '.join(_NAMES)}")
    template = _NAMES[kind][0]
    per_block = "{layer}" in template
    if per_block and layer is None:
        raise ValueError(f"Activation kind {kind!r} lives in a block: give a layer")
    if not per_block and layer is not None:
        raise ValueError(f"Activation kind {kind!r} is not per layer: do not give a layer")
    return template.format(layer=int(layer)) if per_block else template
