"""rtvoice: live voice conversations with the OpenAI Realtime API, with a native audio core."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtvoice._core import (
    AudioProcessor,
    AudioRing,
    CaptureDriver,
    Downlink,
    Framer,
    JitterBuffer,
    JitterBufferStats,
    OpusDecoder,
    OpusEncoder,
    OpusError,
    PlayoutDriver,
    Resampler,
    Uplink,
)

if TYPE_CHECKING:
    from rtvoice.resilience import ReconnectPolicy
    from rtvoice.session import RealtimeSession, SessionMetrics, Tool, connect

_LAZY = {
    "connect": "rtvoice.session",
    "RealtimeSession": "rtvoice.session",
    "SessionMetrics": "rtvoice.session",
    "Tool": "rtvoice.session",
    "ReconnectPolicy": "rtvoice.resilience",
}


def __getattr__(name: str) -> object:
    # The session pulls in aiortc; import it only when it is used.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rtvoice' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "AudioProcessor",
    "AudioRing",
    "CaptureDriver",
    "Downlink",
    "Framer",
    "JitterBuffer",
    "JitterBufferStats",
    "OpusDecoder",
    "OpusEncoder",
    "OpusError",
    "PlayoutDriver",
    "RealtimeSession",
    "ReconnectPolicy",
    "Resampler",
    "SessionMetrics",
    "Tool",
    "Uplink",
    "connect",
]
__version__ = "0.1.0"
