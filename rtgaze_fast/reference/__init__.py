"""The pure-PyTorch oracle: every fused kernel is tested against these functions.

Each module is the twin of one kernel family: ``triplane.sample_decode_folded`` (op
``sample_decode``), ``marcher.march_unclamped`` (op ``march``), ``sampling.importance_depths``
(op ``importance``) and ``renderer.render_reference`` (op ``render``).
"""
