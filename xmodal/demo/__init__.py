"""The offline synthetic world behind ``xmodal demo``, and tiny dual encoders built in code.

- ``world``: deterministic coloured-shape images with captions (``make_world``).
- ``tokenizer`` / ``tiny``: locally trained tokenizers and tiny random CLIP/SigLIP checkpoints.
- ``train``: trains the demo CLIP within a time budget (``ensure_demo_model``).
- ``evaluate``: held-out text-to-image precision@k of a checkpoint directory.

Submodules are imported on use: importing this package does not load torch or transformers.
"""
