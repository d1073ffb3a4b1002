"""clipfit: fine-tune CLIP the ClipFit way (EMNLP 2024) and explain what the fine-tuning did.

``clipfit.load(RUN_DIR | export folder | "hf-hub:USER/REPO")`` returns a :class:`clipfit.api.FineTuned`
(predict, embed, export, push to the Hub). The API is imported on first use, so ``import clipfit``
(and every command's ``--help`` and ``--version``) stays free of torch and open_clip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["FineTuned", "Prediction", "__version__", "load"]

if TYPE_CHECKING:
    from clipfit.api import FineTuned, Prediction, load

_API = ("FineTuned", "Prediction", "load")


def __getattr__(name: str) -> Any:
    if name in _API:
        from clipfit import api

        return getattr(api, name)
    raise AttributeError(f"module 'clipfit' has no attribute {name!r}")
