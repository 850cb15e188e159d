"""rtvoice: live voice conversations with the OpenAI Realtime API, with a native audio core."""

from __future__ import annotations

from rtvoice._core import AudioRing, Framer, OpusDecoder, OpusEncoder, OpusError

__all__ = ["AudioRing", "Framer", "OpusDecoder", "OpusEncoder", "OpusError"]
__version__ = "0.1.0"
