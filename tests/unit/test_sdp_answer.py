"""Reading the server's SDP answer: a=max-message-size (fuzz target fuzz/fuzz_sdp_answer.py)."""

from __future__ import annotations

import pytest

from rtvoice.transports.webrtc import DEFAULT_MAX_MESSAGE_BYTES, _parse_max_message_size

AUDIO = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=max-message-size:111\r\n"
APPLICATION = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:5000\r\n"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a=max-message-size:262144", 262144),
        ("a=max-message-size: 1024 ", 1024),
        ("a=max-message-size:0", 0),  # 0: no limit
        ("a=max-message-size:lots", DEFAULT_MAX_MESSAGE_BYTES),
        ("a=sctp-port:5000", DEFAULT_MAX_MESSAGE_BYTES),
    ],
)
def test_max_message_size_of_the_application_section(line: str, expected: int) -> None:
    assert _parse_max_message_size(AUDIO + APPLICATION + line + "\r\n") == expected


def test_max_message_size_outside_the_application_section_is_ignored() -> None:
    assert _parse_max_message_size(AUDIO) == DEFAULT_MAX_MESSAGE_BYTES


def test_negative_max_message_size_falls_back_to_the_default() -> None:
    # Regression (fuzz/regressions/sdp_answer/negative-max-message-size): -1 used to be returned,
    # after which every data channel send was refused as too large.
    assert _parse_max_message_size(APPLICATION + "a=max-message-size:-1\r\n") == (
        DEFAULT_MAX_MESSAGE_BYTES
    )
