from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from audio_fixtures import speech


def pytest_report_header(config: pytest.Config) -> list[str]:
    import rtvoice

    native = rtvoice._core.__version__
    return [f"rtvoice {rtvoice.__version__} (native core {native}), numpy {np.__version__}"]


@pytest.fixture(scope="session")
def speech_48k() -> npt.NDArray[np.float32]:
    """~6 s of synthetic English speech, 48 kHz mono float32, read-only (audio_fixtures.py)."""
    return speech(48000)


@pytest.fixture(scope="session")
def speech_24k() -> npt.NDArray[np.float32]:
    """The speech fixture at its native 24 kHz, mono float32, read-only."""
    return speech(24000)
