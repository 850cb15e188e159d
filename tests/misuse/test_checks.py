"""rtvoice._checks: every bad argument raises at once, with a message that names the fix."""

from __future__ import annotations

import math
from collections import OrderedDict
from fractions import Fraction
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest

from rtvoice import _checks

# ------------------------------------------------------------------------------- sample_rate


@pytest.mark.parametrize("rate", [8000, 24000, 48000, 192000, np.int32(16000), np.int64(44100)])
def test_sample_rate_accepts_python_and_numpy_integers_in_range(rate: Any) -> None:
    got = _checks.sample_rate(rate)
    assert got == int(rate)
    assert type(got) is int


@pytest.mark.parametrize(
    "rate", [True, False, np.bool_(True), 48000.0, "48000", None, np.float64(8000)]
)
def test_sample_rate_refuses_bools_floats_and_strings_with_a_type_error(rate: Any) -> None:
    with pytest.raises(TypeError, match=r"input_rate_hz must be an int number of Hz"):
        _checks.sample_rate(rate, "input_rate_hz")


@pytest.mark.parametrize("rate", [0, -48000, 7999, 192001, 10**9])
def test_sample_rate_outside_8000_to_192000_hz_is_a_value_error_naming_the_range(
    rate: int,
) -> None:
    with pytest.raises(ValueError, match=r"sample_rate must be within 8000\.\.192000 Hz"):
        _checks.sample_rate(rate)


# ------------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize("value", [0.001, 1, 2.5, np.float32(0.5), Fraction(1, 4)])
def test_positive_timeout_returns_a_float(value: Any) -> None:
    got = _checks.positive_timeout(value, "timeout_s")
    assert got == float(value)
    assert type(got) is float


@pytest.mark.parametrize("value", [0, 0.0, -0.0, -1, math.nan, -math.inf])
def test_positive_timeout_refuses_zero_negative_and_nan(value: float) -> None:
    with pytest.raises(ValueError, match=r"timeout_s must be > 0 seconds"):
        _checks.positive_timeout(value, "timeout_s")


def test_positive_timeout_refuses_infinity_and_points_at_none_when_none_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"finite.*or None for no timeout"):
        _checks.positive_timeout(math.inf, "timeout_s", allow_none=True)
    with pytest.raises(ValueError, match=r"timeout_s must be a finite number of seconds"):
        _checks.positive_timeout(math.inf, "timeout_s")


@pytest.mark.parametrize("value", ["5", b"5", True, [1.0], 1j])
def test_positive_timeout_refuses_non_numbers_with_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match=r"ready_timeout_s must be a number of seconds"):
        _checks.positive_timeout(value, "ready_timeout_s")


def test_positive_timeout_allows_none_only_when_the_caller_says_so() -> None:
    assert _checks.positive_timeout(None, "timeout_s", allow_none=True) is None
    with pytest.raises(TypeError, match=r"timeout_s must be a number of seconds, got None"):
        _checks.positive_timeout(None, "timeout_s")


def test_positive_interval_refuses_none_zero_nan_infinity_and_strings() -> None:
    assert _checks.positive_interval(0.02, "stats_interval_s") == 0.02
    for bad in (0, -0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"stats_interval_s must be"):
            _checks.positive_interval(bad, "stats_interval_s")
    for wrong in (None, "1", False):
        with pytest.raises(TypeError, match=r"stats_interval_s must be a number of seconds"):
            _checks.positive_interval(wrong, "stats_interval_s")


# ------------------------------------------------------------------------------- pcm_layout


@pytest.mark.parametrize(
    ("shape", "layout"),
    [((480,), (480, 1)), ((0,), (0, 1)), ((480, 1), (480, 1)), ((480, 2), (480, 2)),
     ((4800, 8), (4800, 8)), ((2, 4), (2, 4)), ((0, 2), (0, 2))],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_pcm_layout_is_frames_then_channels(
    shape: tuple[int, ...], layout: tuple[int, int], dtype: Any
) -> None:
    assert _checks.pcm_layout(np.zeros(shape, dtype)) == layout


def test_pcm_layout_refuses_a_channels_first_array_and_suggests_transposing() -> None:
    stereo_first = np.zeros((2, 4800), np.float32)
    with pytest.raises(ValueError, match=r"\(frames, channels\).*\(2, 4800\).*mic\.T") as info:
        _checks.pcm_layout(stereo_first, "mic")
    assert "channels-first" in str(info.value)
    assert _checks.pcm_layout(stereo_first.T, "mic") == (4800, 2)


@pytest.mark.parametrize("shape", [(4800, 9), (9, 4800), (4800, 0)])
def test_pcm_layout_refuses_more_than_8_or_zero_channels(shape: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=r"\(frames, channels\) with 1\.\.8 channels"):
        _checks.pcm_layout(np.zeros(shape, np.int16))


@pytest.mark.parametrize("shape", [(), (10, 2, 2), (1, 480, 2)])
def test_pcm_layout_refuses_scalars_and_more_than_two_dimensions(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(frames,\) or \(frames, channels\)"):
        _checks.pcm_layout(np.zeros(shape, np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.uint8, np.float16, np.bool_])
def test_pcm_layout_refuses_other_dtypes_and_names_the_conversion(dtype: Any) -> None:
    with pytest.raises(TypeError, match=r"float32 or int16.*astype\(np\.float32\)"):
        _checks.pcm_layout(np.zeros((480, 2), dtype))


@pytest.mark.parametrize("value", [[0.0] * 480, b"\x00" * 960, memoryview(b"\x00\x00"), None])
def test_pcm_layout_refuses_non_arrays_with_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match=r"pcm must be a numpy array"):
        _checks.pcm_layout(value)


# ------------------------------------------------------------------------------- mapping


@pytest.mark.parametrize("value", [{}, {"a": 1}, OrderedDict(a=1), MappingProxyType({"a": 1})])
def test_mapping_returns_the_mapping_itself(value: Any) -> None:
    assert _checks.mapping(value, "session") is value


@pytest.mark.parametrize("value", ["garbage", [("a", 1)], None, 3, {"a"}])
def test_mapping_refuses_anything_else_naming_that_a_mapping_is_expected(value: Any) -> None:
    with pytest.raises(TypeError, match=r"session must be a mapping \(e\.g\. a dict\), got"):
        _checks.mapping(value, "session")


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"reconnect": "yes"}, TypeError, "reconnect must be True, False or a"),
        ({"reconnect": 3}, TypeError, "reconnect must be"),
        ({"reconnect_audio_s": -1}, ValueError, "reconnect_audio_s"),
        ({"reconnect_audio_s": float("inf")}, ValueError, "reconnect_audio_s"),
        ({"reconnect_queue_bytes": -5}, ValueError, "reconnect_queue_bytes"),
        ({"reconnect_queue_bytes": 1.5}, TypeError, "reconnect_queue_bytes"),
        ({"restore_max_items": -1}, ValueError, "restore_max_items"),
        ({"restore_max_chars": "many"}, TypeError, "restore_max_chars"),
        ({"recycle": "on"}, TypeError, "recycle must be a bool"),
        ({"max_session_s": 0}, ValueError, "max_session_s"),
        ({"recycle_before_s": -1}, ValueError, "recycle_before_s"),
    ],
)
def test_session_resilience_arguments_are_checked_at_construction(
    kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    import rtvoice

    with pytest.raises(exc, match=match):
        rtvoice.connect(base_url="http://127.0.0.1:9/v1", api_key="sk-test-0123456789", **kwargs)


def test_a_reconnect_policy_is_accepted_and_exported() -> None:
    import rtvoice

    policy = rtvoice.ReconnectPolicy(attempts=2)
    session = rtvoice.connect(
        base_url="http://127.0.0.1:9/v1", api_key="sk-test-0123456789", reconnect=policy
    )
    assert session._policy is policy


def test_voice_processing_is_a_session_option() -> None:
    import rtvoice
    from rtvoice.audio.engine import VoiceProcessing

    with_vp = rtvoice.connect(
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-test-0123456789",
        transport="webrtc",
        voice_processing=VoiceProcessing(agc=False),
    )
    processing = with_vp.metrics.uplink["processing"]
    assert processing["aec"] is True
    assert processing["agc"] is False
    plain = rtvoice.connect(
        base_url="http://127.0.0.1:9/v1", api_key="sk-test-0123456789", transport="webrtc"
    )
    assert plain.metrics.uplink.get("processing") is None
