"""The one compatibility module for aiortc/aioice internals: pinned versions and the consent fix.

**Supported versions** are pinned in :data:`SUPPORTED` (as in pyproject.toml);
:func:`check_versions` raises :class:`CompatError` on others and :func:`check_supported` also
checks every aioice/aiortc internal that rtvoice relies on (here and in
:mod:`rtvoice.rtc.loopback`). tests/unit/test_compat.py fails if an upgrade moves them.

**Consent freshness toward ICE-lite peers** (RFC 7675). aioice 0.13 sends its consent checks
without USE-CANDIDATE, one try each with a 0.5 s timeout, and closes the connection after six
misses in a row. An ICE-lite server that ignores binding requests without USE-CANDIDATE once a
pair is nominated (OpenAI's media servers do) therefore ends every call after about 30 s, and a
response slower than 0.5 s counts as a miss even from a healthy peer. :func:`install_consent_fix`
replaces ``aioice.Connection.query_consent`` once per process (version-checked, idempotent) with
:func:`rfc7675_query_consent`:

- a consent check on every nominated pair every :data:`CONSENT_INTERVAL_S` times U(0.8, 1.2);
- toward an ICE-lite peer (``Connection.remote_is_lite``, which aiortc sets from ``a=ice-lite``
  in the remote description) the controlling agent's checks carry USE-CANDIDATE, as its
  nominating check did;
- each check is one STUN transaction with :data:`CONSENT_RETRANSMISSIONS` retransmissions
  (RTO 0.5 s, doubling), and checks overlap, so a response that arrives seconds late still
  counts;
- consent expires, and the connection closes as aioice's did, when a pair has had no valid
  (authenticated success) response for :data:`CONSENT_EXPIRY_S`.

Importing :mod:`rtvoice.rtc` installs it, so every peer connection in the process (rtvoice's
transport and the simulator's answerer alike) gets it without a call at the peer connection.
:func:`set_consent_fix` turns it off for one connection (tests use that to show the failure).

**Simulator-only**: :func:`filter_stun_requests` hooks the STUN requests an answerer's ICE
connections receive, so that the simulator can behave like an ICE-lite server
(:func:`lite_server_ignores`) or make ICE impossible, and :func:`filter_outbound` drops every
datagram an answerer would send (STUN, DTLS, SRTP/SRTCP, SCTP), so that it can vanish or freeze
like a killed process or a dropped network. Nothing in the client uses them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

__all__ = [
    "CONSENT_EXPIRY_S",
    "CONSENT_INTERVAL_S",
    "CONSENT_RETRANSMISSIONS",
    "SUPPORTED",
    "CompatError",
    "InboundCounts",
    "OutboundCounts",
    "StunRequestCounts",
    "check_supported",
    "check_versions",
    "consent_fix_installed",
    "filter_inbound_rtp",
    "filter_outbound",
    "filter_stun_requests",
    "ice_connections",
    "install_consent_fix",
    "lite_server_ignores",
    "rfc7675_query_consent",
    "set_consent_fix",
    "version_tuple",
]

logger = logging.getLogger("rtvoice.rtc")

# Package -> (lowest supported version inclusive, first unsupported version), as in pyproject.toml.
SUPPORTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "aiortc": ((1, 16), (1, 17)),
    "aioice": ((0, 13), (0, 14)),
}

#: RFC 7675 section 5.1: consent expires 30 s after the last valid response.
CONSENT_EXPIRY_S = 30.0
#: RFC 7675 section 5.1: a consent check every 5 s, randomized to 0.8-1.2 times that.
CONSENT_INTERVAL_S = 5.0
#: Retransmissions of one check (aioice's RTO: 0.5 s doubling, so sends at 0, 0.5, 1.5, 3.5 and
#: 7.5 s; the transaction, and with it a late response, is kept for 15.5 s).
CONSENT_RETRANSMISSIONS = 4

# Per-connection switch (an attribute on aioice.Connection); absent means on.
_FIX_ATTR = "_rtvoice_consent_fix"
_rng = random.Random()
_install_lock = threading.Lock()
_original_query_consent: Callable[..., Any] | None = None


class CompatError(RuntimeError):
    """The installed aiortc/aioice is not one rtvoice supports, or moved an internal it uses."""


def version_tuple(text: str) -> tuple[int, ...]:
    """``"0.13.0rc1"`` -> ``(0, 13, 0)``: the leading numbers of each dotted part."""
    parts = []
    for piece in text.split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group(0)))
    return tuple(parts)


def check_versions() -> None:
    """Raise :class:`CompatError` unless the installed aiortc and aioice are in
    :data:`SUPPORTED`."""
    for package, (low, high) in SUPPORTED.items():
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError as exc:
            raise CompatError(f"{package} is not installed") from exc
        v = version_tuple(version)
        if not (low <= v < high):
            raise CompatError(
                f"{package} {version} is not supported by rtvoice.rtc "
                f"(supported: >={'.'.join(map(str, low))},<{'.'.join(map(str, high))})"
            )


def _params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise CompatError(f"aiortc/aioice internals moved: {what}")


def check_supported() -> None:
    """Raise :class:`CompatError` unless the versions are supported and every internal that
    rtvoice.rtc uses is where it expects: ``aioice.ice.get_host_addresses`` (loopback gathering),
    ``Connection.query_consent/build_request/close/request_received``, the attributes
    ``remote_is_lite``, ``remote_password``, ``ice_controlling``, ``_nominated``,
    ``_query_consent_task``, ``_protocols``, ``StunProtocol.request(..., retransmissions=)``,
    ``StunProtocol.send_data/send_stun`` (the simulator's outbound filter), and aiortc setting
    ``remote_is_lite`` from ``RTCIceParameters.iceLite``."""
    check_versions()
    import aioice.ice
    import aioice.stun
    from aiortc import rtcicetransport
    from aiortc.rtcicetransport import RTCIceParameters

    from rtvoice.rtc import loopback

    fn = loopback._original or getattr(aioice.ice, "get_host_addresses", None)
    if fn is None or not callable(fn):
        raise CompatError("aiortc/aioice internals moved: aioice.ice.get_host_addresses is gone")
    _expect(
        _params(fn) == ["use_ipv4", "use_ipv6"],
        f"aioice.ice.get_host_addresses{inspect.signature(fn)}",
    )

    conn_cls = aioice.ice.Connection
    original = _original_query_consent or conn_cls.query_consent
    _expect(
        inspect.iscoroutinefunction(original) and _params(original) == ["self"],
        "aioice.Connection.query_consent(self) is not a coroutine function",
    )
    _expect(
        _params(conn_cls.build_request) == ["self", "pair", "nominate"],
        f"aioice.Connection.build_request{inspect.signature(conn_cls.build_request)}",
    )
    _expect(
        _params(conn_cls.request_received) == ["self", "message", "addr", "protocol"],
        f"aioice.Connection.request_received{inspect.signature(conn_cls.request_received)}",
    )
    _expect(inspect.iscoroutinefunction(conn_cls.close), "aioice.Connection.close")
    request_params = _params(aioice.ice.StunProtocol.request)
    _expect(
        request_params[:3] == ["self", "request", "addr"]
        and {"integrity_key", "retransmissions"} <= set(request_params),
        f"aioice.ice.StunProtocol.request{inspect.signature(aioice.ice.StunProtocol.request)}",
    )
    send_data = aioice.ice.StunProtocol.send_data
    _expect(
        inspect.iscoroutinefunction(send_data) and _params(send_data) == ["self", "data", "addr"],
        f"aioice.ice.StunProtocol.send_data{inspect.signature(send_data)}",
    )
    send_stun = aioice.ice.StunProtocol.send_stun
    _expect(
        not inspect.iscoroutinefunction(send_stun)
        and _params(send_stun) == ["self", "message", "addr"],
        f"aioice.ice.StunProtocol.send_stun{inspect.signature(send_stun)}",
    )
    probe = conn_cls(ice_controlling=True)
    for attr in (
        "remote_is_lite",
        "remote_password",
        "ice_controlling",
        "_nominated",
        "_query_consent_task",
        "_protocols",
    ):
        _expect(hasattr(probe, attr), f"aioice.Connection().{attr} is gone")
    _expect(isinstance(probe._nominated, dict), "aioice.Connection()._nominated is not a dict")
    _expect(
        issubclass(aioice.stun.TransactionTimeout, aioice.stun.TransactionError),
        "aioice.stun.TransactionError",
    )
    _expect(
        "iceLite" in inspect.signature(RTCIceParameters).parameters,
        "aiortc RTCIceParameters.iceLite",
    )
    start_src = inspect.getsource(rtcicetransport.RTCIceTransport.start)
    _expect(
        "remote_is_lite = remoteParameters.iceLite" in start_src,
        "aiortc RTCIceTransport.start no longer sets Connection.remote_is_lite",
    )


# ------------------------------------------------------------------------------ consent


def set_consent_fix(target: Any, enabled: bool) -> None:
    """Turn the consent fix on or off for an aioice ``Connection`` or for every ICE connection
    of an aiortc ``RTCPeerConnection`` (before its ICE completes). With it off, the connection
    runs aioice's own consent checks."""
    conns = [target] if hasattr(target, "_nominated") else ice_connections(target)
    for conn in conns:
        setattr(conn, _FIX_ATTR, enabled)


def _uses_fix(conn: Any) -> bool:
    return bool(getattr(conn, _FIX_ATTR, True))


async def rfc7675_query_consent(conn: Any) -> None:
    """Consent freshness for one aioice ``Connection`` (RFC 7675); see the module docstring.
    Runs until the connection closes it (cancellation) or consent expires (then it closes the
    connection)."""
    import aioice.stun

    assert conn.remote_password is not None
    loop = asyncio.get_running_loop()
    key = conn.remote_password.encode("utf8")
    start = loop.time()
    last_valid: dict[int, float] = {}  # component -> time of its last valid response
    pending: set[asyncio.Task[None]] = set()

    async def check(component: int, pair: Any) -> None:
        # Toward a lite peer the controlling agent keeps USE-CANDIDATE on (build_request only
        # adds it when controlling).
        request = conn.build_request(pair, nominate=bool(conn.remote_is_lite))
        try:
            await pair.protocol.request(
                request,
                pair.remote_addr,
                integrity_key=key,
                retransmissions=CONSENT_RETRANSMISSIONS,
            )
        except aioice.stun.TransactionError:
            return
        last_valid[component] = loop.time()

    def next_interval() -> float:
        return CONSENT_INTERVAL_S * (0.8 + 0.4 * _rng.random())

    try:
        next_check = loop.time() + next_interval()
        while True:
            now = loop.time()
            components = list(conn._nominated.items())
            expiry = min(
                (last_valid.get(c, start) + CONSENT_EXPIRY_S for c, _ in components),
                default=now + CONSENT_EXPIRY_S,
            )
            if now >= expiry:
                logger.info(
                    "ICE consent expired: no valid response to consent checks for %.0f s",
                    CONSENT_EXPIRY_S,
                )
                break
            if now >= next_check:
                for component, pair in components:
                    task = asyncio.ensure_future(check(component, pair))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                next_check = now + next_interval()
            await asyncio.sleep(max(0.0, min(next_check, expiry) - now))
    finally:
        for task in list(pending):
            task.cancel()
    # As aioice does: the task is done for close(), which would otherwise cancel it.
    conn._query_consent_task = None
    await conn.close()


async def _query_consent(self: Any) -> None:
    if _uses_fix(self):
        await rfc7675_query_consent(self)
    else:
        assert _original_query_consent is not None
        await _original_query_consent(self)


_query_consent._rtvoice_consent_fix = True  # type: ignore[attr-defined]


def install_consent_fix() -> None:
    """Install :func:`rfc7675_query_consent` as ``aioice.Connection.query_consent`` for the
    whole process (idempotent; again if something replaced it since). Raises
    :class:`CompatError` on an unsupported aiortc/aioice."""
    global _original_query_consent
    with _install_lock:
        import aioice.ice

        current = aioice.ice.Connection.query_consent
        if getattr(current, "_rtvoice_consent_fix", False):
            return
        check_supported()
        if _original_query_consent is None or current.__module__ == "aioice.ice":
            _original_query_consent = current
        aioice.ice.Connection.query_consent = _query_consent  # type: ignore[method-assign]


def consent_fix_installed() -> bool:
    """Whether ``aioice.Connection.query_consent`` is rtvoice's."""
    import aioice.ice

    return bool(getattr(aioice.ice.Connection.query_consent, "_rtvoice_consent_fix", False))


def _install_at_import() -> None:
    try:
        install_consent_fix()
    except CompatError as exc:
        warnings.warn(
            f"rtvoice.rtc: ICE consent fix not installed ({exc}); calls to ICE-lite servers "
            "will drop after about 30 s",
            RuntimeWarning,
            stacklevel=3,
        )


# ------------------------------------------------------------------------------ inspection


def ice_connections(pc: Any) -> list[Any]:
    """The distinct aioice ``Connection`` objects of an aiortc ``RTCPeerConnection`` (its
    transceivers' and its SCTP transport's), as they are now."""
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    out: list[Any] = []
    for dtls in transports:
        conn = getattr(getattr(dtls, "transport", None), "_connection", None)
        if conn is None or not hasattr(conn, "_nominated"):
            raise CompatError("cannot reach the ICE connection of this aiortc version")
        if all(conn is not c for c in out):
            out.append(conn)
    return out


def _nominated_now(conn: Any) -> bool:
    return bool(conn._nominated)


# ------------------------------------------------------------------ simulator-only: STUN filter


@dataclass
class StunRequestCounts:
    """What :func:`filter_stun_requests` saw: requests passed to aioice (and of those, how many
    arrived after a pair was nominated, i.e. consent checks) and requests ignored."""

    passed: int = 0
    passed_after_nomination: int = 0
    ignored: int = 0


def lite_server_ignores(conn: Any, message: Any) -> bool:
    """What an ICE-lite server such as OpenAI's is reported to do: once a pair is nominated,
    ignore binding requests without USE-CANDIDATE (simulator-only)."""
    return _nominated_now(conn) and "USE-CANDIDATE" not in message.attributes


def filter_stun_requests(
    pc: Any, ignore: Callable[[Any, Any], bool], counts: StunRequestCounts | None = None
) -> StunRequestCounts:
    """Simulator-only: every STUN request that the ICE connections of ``pc`` receive from now on
    first goes to ``ignore(connection, message)``; when it returns true, the request gets no
    response and does not reach aioice (no triggered check, no nomination). Call it after
    ``setLocalDescription`` (aiortc has then bundled the transports) and before the answer goes
    out. Returns the counters it updates."""
    counts = counts if counts is not None else StunRequestCounts()
    for conn in ice_connections(pc):
        if getattr(conn, "_rtvoice_stun_filter", False):
            continue
        original = conn.request_received

        def request_received(
            message: Any,
            addr: tuple[str, int],
            protocol: Any,
            _conn: Any = conn,
            _original: Callable[..., None] = original,
        ) -> None:
            if ignore(_conn, message):
                counts.ignored += 1
                return
            counts.passed += 1
            if _nominated_now(_conn):
                counts.passed_after_nomination += 1
            _original(message, addr, protocol)

        conn.request_received = request_received
        conn._rtvoice_stun_filter = True
    return counts


# ------------------------------------------------------------------ simulator-only: outbound


@dataclass
class OutboundCounts:
    """What :func:`filter_outbound` did: datagrams passed and dropped."""

    passed: int = 0
    dropped: int = 0


def filter_outbound(
    pc: Any, drop: Callable[[], bool], counts: OutboundCounts | None = None
) -> OutboundCounts:
    """Simulator-only: every datagram the ICE connections of ``pc`` send from now on (STUN
    requests and responses, DTLS, SRTP and SRTCP, SCTP) is dropped while ``drop()`` is true, as
    if the network had gone; nothing is closed and nothing is queued. Call it after
    ``setLocalDescription`` (the transports are bundled and the sockets gathered then).
    Returns the counters it updates."""
    counts = counts if counts is not None else OutboundCounts()
    for conn in ice_connections(pc):
        for protocol in list(conn._protocols):
            if getattr(protocol, "_rtvoice_outbound_filter", False):
                continue
            send_data, send_stun = protocol.send_data, protocol.send_stun

            async def filtered_data(
                data: bytes, addr: tuple[str, int], _send: Callable[..., Any] = send_data
            ) -> None:
                if drop():
                    counts.dropped += 1
                    return
                counts.passed += 1
                await _send(data, addr)

            def filtered_stun(
                message: Any, addr: tuple[str, int], _send: Callable[..., None] = send_stun
            ) -> None:
                if drop():
                    counts.dropped += 1
                    return
                counts.passed += 1
                _send(message, addr)

            protocol.send_data = filtered_data
            protocol.send_stun = filtered_stun
            protocol._rtvoice_outbound_filter = True
    return counts


@dataclass
class InboundCounts:
    """What :func:`filter_inbound_rtp` dropped and passed (RTP datagrams only)."""

    dropped: int = 0
    passed: int = 0


def filter_inbound_rtp(
    pc: Any, drop: Callable[[], bool], counts: InboundCounts | None = None
) -> InboundCounts:
    """Simulator-only: every SRTP datagram (not SRTCP) that the ICE connections of ``pc``
    receive from now on is dropped when ``drop()`` says so, before aiortc sees it, as loss on
    the way from the client would be (the answerer's receiver reports then count it). Call it
    after ``setLocalDescription``. Returns the counters it updates."""
    counts = counts if counts is not None else InboundCounts()
    for conn in ice_connections(pc):
        for protocol in list(conn._protocols):
            if getattr(protocol, "_rtvoice_inbound_filter", False):
                continue
            received = protocol.datagram_received

            def filtered(
                data: bytes, addr: tuple[Any, ...], _received: Callable[..., None] = received
            ) -> None:
                rtp = len(data) >= 2 and 128 <= data[0] <= 191 and not 192 <= data[1] <= 223
                if rtp:
                    if drop():
                        counts.dropped += 1
                        return
                    counts.passed += 1
                _received(data, addr)

            protocol.datagram_received = filtered
            protocol._rtvoice_inbound_filter = True
    return counts
