"""Model weights: the embedded defaults (rtgaze_fast/assets) and checked safetensors loading."""
from __future__ import annotations

import os
from typing import Optional, Tuple

from ..errors import UserError
from .configs import CONFIGS, DEFAULT_CONFIG

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")


class WeightsError(UserError):
    """A weights file that is missing, unreadable or does not match the model."""


def default_weights(config: str) -> Optional[str]:
    """The embedded weights of ``config`` (``assets/rtgaze_{config}.safetensors``), or None."""
    path = os.path.join(ASSETS, f"rtgaze_{config}.safetensors")
    return path if os.path.isfile(path) else None


def config_of(weights: Optional[str]) -> str:
    """The configuration ``weights`` were trained with (the ``config`` entry of their safetensors
    metadata, as ``rtgaze-fast train`` writes it), else DEFAULT_CONFIG (also for no file, or one
    that cannot be read: loading it then says why)."""
    if weights:
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(weights, "pt") as f:
                config = (f.metadata() or {}).get("config")
        except (SafetensorError, OSError, ValueError):
            config = None
        if config in CONFIGS:
            return config
    return DEFAULT_CONFIG


def load_weights(model, path: str) -> None:
    """Load a safetensors state dict; name missing/unexpected keys and shape mismatches."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    if not os.path.isfile(path):
        raise WeightsError(f"weights file {path!r} does not exist")
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"cannot read weights {path!r} (expected a safetensors file): {e}") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"wrong shapes {shapes[:3]}")
        raise WeightsError(f"weights {path!r} do not match config {model.config.name!r}: " + "; ".join(parts))
    model.load_state_dict(state)


def load_model(config: str = DEFAULT_CONFIG, weights: Optional[str] = None, device="cpu", backend: str = "auto",
               deterministic: bool = True, embedded: bool = True) -> Tuple["RTGaze", Optional[str]]:  # noqa: F821
    """An RTGaze of ``config`` (default: the configuration of the default embedded weights) in eval
    mode on ``device`` with ``weights`` (default: the embedded ones if ``embedded`` and there are
    some). Returns (model, weights path or None: None means randomly initialised)."""
    from .rtgaze import RTGaze
    model = RTGaze(config, backend=backend, deterministic=deterministic)
    path = weights or (default_weights(config) if embedded else None)
    if path:
        load_weights(model, path)
    return model.float().to(device).eval(), path
