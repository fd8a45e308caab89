"""User-facing errors: each carries a plain sentence telling the user what to do.

The Streamlit glue catches `UserInputError` (and only that), shows its message with `st.error` and stops the
page. Everything else is a bug and is allowed to surface.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """A problem the user can fix (bad prompt, unknown model, ...). The message is shown to them as is."""


class ModelLoadError(UserInputError):
    """The model reference could not be turned into a loaded model (missing folder, weights, tokenizer, ...)."""


class UnsupportedArchitectureError(ModelLoadError):
    """The model's architecture has no adapter; the message lists the supported ones."""


class PromptError(UserInputError):
    """The prompt cannot be run (empty, whitespace only, ...)."""


class TargetTokenError(UserInputError):
    """A target text that must be exactly one token is empty or splits into several tokens."""
