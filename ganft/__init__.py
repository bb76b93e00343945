"""ganft: a training-job service for GAN-based fine-tuning.

`ganft.Client` (the Python SDK) is imported on first use, so `import ganft` stays light
(no httpx or pydantic until a client is wanted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ganft.client import ApiError, ChecksumError, Client

__all__ = ["ApiError", "ChecksumError", "Client"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ganft import client

        return getattr(client, name)
    raise AttributeError(f"module 'ganft' has no attribute {name!r}")
