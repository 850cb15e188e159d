"""Fuzzes the handling of the SDP answer text that the server returns (rtvoice.transports.webrtc):
reading a=max-message-size must never raise and must yield a usable size (>= 0; 0 = no limit).

Inputs are arbitrary text, and SDP-shaped text assembled from typical answer lines and fragments.
Run: python fuzz/fuzz_sdp_answer.py [libFuzzer flags] [corpus dirs]
"""

from __future__ import annotations

import sys

import atheris

# Coverage instrumentation for the parser module only (instrumenting its dependencies is slow).
with atheris.instrument_imports(include=["rtvoice.transports.webrtc"]):
    from rtvoice.transports import webrtc

LINES = [
    "v=0",
    "o=- 1 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "a=sctp-port:5000",
    "a=max-message-size:",
    "m=",
    "a=",
]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        sdp = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    else:
        parts = []
        for _ in range(fdp.ConsumeIntInRange(0, 16)):
            line = fdp.PickValueInList(LINES)
            if fdp.ConsumeBool():
                line += fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))
            parts.append(line)
        sdp = fdp.PickValueInList(["\r\n", "\n"]).join(parts)
    size = webrtc._parse_max_message_size(sdp)
    assert isinstance(size, int)
    assert size >= 0, f"max-message-size {size} from {sdp!r}"


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
