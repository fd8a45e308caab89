"""Activation names in the TransformerLens scheme, built in one place from the activation API's own table.

>>> act_name("pattern", 3)
'blocks.3.attn.hook_pattern'
>>> act_name("embed")
'hook_embed'

The kinds are exactly those `interp_core.activations` accepts (its `NAME_KINDS` table: embed, pos_embed, resid_pre,
q, k, v, pattern, z, attn_out, mlp_in, post, mlp_out, resid_post, ln_final), so every name built here parses there.
"""

from __future__ import annotations

from interp_core.activations import GLOBAL_KINDS, NAME_KINDS

_TEMPLATES = {kind: name for name, kind in NAME_KINDS.items()}  # kind -> name without "blocks.{layer}."


def act_name(kind: str, layer: int | None = None) -> str:
    """The TransformerLens name of activation `kind` (at `layer` for per-block kinds).

    Raises ValueError for an unknown kind, a per-block kind without a layer, or a layer for a global kind.
    """
    if kind not in _TEMPLATES:
        raise ValueError(f"Unknown activation kind {kind!r}; known: {', '.join(_TEMPLATES)}")
    per_block = kind not in GLOBAL_KINDS
    if per_block and layer is None:
        raise ValueError(f"Activation kind {kind!r} lives in a block: give a layer")
    if not per_block and layer is not None:
        raise ValueError(f"Activation kind {kind!r} is not per layer: do not give a layer")
    return f"blocks.{int(layer)}.{_TEMPLATES[kind]}" if per_block else _TEMPLATES[kind]
