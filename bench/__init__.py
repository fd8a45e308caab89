"""Side-by-side benchmarks of the workbench against TransformerLens and Captum: `make bench` (see bench/run.py)."""
