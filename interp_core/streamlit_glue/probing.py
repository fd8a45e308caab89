"""The Probing page's settings panel: cross-validation folds, the regularisation strength and the optional MLP
probe, kept across page switches (and in the URL) and returned as the ProbeConfig the probes are trained with."""

from __future__ import annotations

import streamlit as st

from interp_core.probing import DEFAULT_FOLDS, ProbeConfig
from interp_core.streamlit_glue.state import kept

C_VALUES = (0.001, 0.01, 0.1, 1.0, 10.0)  # inverse L2 strength; smaller = simpler probe


def probe_settings() -> ProbeConfig:
    """The probe settings as widgets (draw inside the column or expander that should hold them)."""
    kept("probe_folds", lambda: DEFAULT_FOLDS, fit=lambda n: min(max(int(n), 3), 10), link="probe_folds")
    kept("probe_c", lambda: ProbeConfig.C, link="probe_c", options=C_VALUES)
    kept("probe_mlp", lambda: False, link="probe_mlp")
    n_folds = st.number_input("Cross-validation folds", min_value=3, max_value=10, key="probe_folds",
                              help="Folds are grouped by sentence: no sentence is ever in both the training and "
                                   "the test part.")
    c = st.select_slider("Regularisation C (smaller = simpler probe)", C_VALUES, key="probe_c",
                         help="Inverse L2 strength of the logistic regression on standardised features. "
                              "Simpler probes memorise less, which raises selectivity (Hewitt & Liang 2019).")
    mlp = st.checkbox("Also train a small MLP probe (slower)", key="probe_mlp",
                      help="One hidden layer of 64 units. It has no class weights, unlike the linear probe.")
    return ProbeConfig(n_folds=int(n_folds), C=float(c), mlp=bool(mlp))
