"""interp_core: the plain-Python (torch) backend of the interpretability workbench. No Streamlit here."""
