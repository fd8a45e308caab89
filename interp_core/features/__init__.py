"""Sparse autoencoders (SAEs) on one named activation: the SAE and SAELens' folder format (`sae`), a trainer that
streams activations from the model (`train`), and reconstruction quality (`metrics`).

    >>> from interp_core.features import metrics, sae, train
    >>> model_sae = sae.load(bundle, folder)             # cfg.json + sae_weights.safetensors, checked on bundle
    >>> training = train.train(bundle, id_batches, train.TrainSettings("blocks.2.hook_resid_pre", k=12))
    >>> metrics.measure(bundle, training.sae, held_out)  # explained variance, loss recovered, L0, dead fraction
"""
