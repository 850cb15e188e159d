// The native media path's pieces: RTP/RTCP packets, reception statistics (RFC 3550 A.3/A.8),
// SRTP sessions of every supported profile, and one MediaCall on loopback UDP sockets (the
// paced send path, the inbound path into a Downlink, RTCP, and the hand-off of non-media
// datagrams).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "check.hpp"
#include "rtvoice/media_engine.hpp"
#include "rtvoice/rtp.hpp"
#include "rtvoice/srtp_session.hpp"

using namespace rtvoice;

namespace {

void test_rtp_roundtrip() {
  rtp::HeaderExtensions ext;
  ext.mid_id = 1;
  std::memcpy(ext.mid, "0", 1);
  ext.mid_len = 1;
  ext.abs_send_time_id = 3;
  const std::uint8_t payload[5] = {1, 2, 3, 4, 5};
  std::uint8_t buf[128];
  const std::size_t n = rtp::write_rtp(buf, sizeof(buf), 111, true, 65535, 0xFFFFFF00u, 0x11223344u,
                                       ext, 0xABCDEF, 127, false, payload, 5);
  RTVOICE_CHECK(n > 12 + 5);
  RTVOICE_CHECK_EQ((n - 12 - 5) % 4, 0u);
  rtp::RtpView v;
  RTVOICE_CHECK(rtp::parse_rtp(buf, n, v));
  RTVOICE_CHECK_EQ(v.payload_type, 111);
  RTVOICE_CHECK(v.marker);
  RTVOICE_CHECK_EQ(v.seq, 65535);
  RTVOICE_CHECK_EQ(v.timestamp, 0xFFFFFF00u);
  RTVOICE_CHECK_EQ(v.ssrc, 0x11223344u);
  RTVOICE_CHECK_EQ(v.payload_len, 5u);
  RTVOICE_CHECK(std::memcmp(v.payload, payload, 5) == 0);
  RTVOICE_CHECK(!rtp::is_rtcp(buf, n));
  // Too small a buffer: nothing written.
  RTVOICE_CHECK_EQ(rtp::write_rtp(buf, 20, 111, false, 1, 1, 1, ext, 0, 0, false, payload, 5), 0u);
  // Malformed: version 1, CSRCs past the end, padding longer than the packet.
  std::uint8_t bad[16] = {0x40, 111};
  RTVOICE_CHECK(!rtp::parse_rtp(bad, sizeof(bad), v));
  bad[0] = 0x8F;  // 15 CSRCs
  RTVOICE_CHECK(!rtp::parse_rtp(bad, sizeof(bad), v));
  bad[0] = 0xA0;  // padding
  bad[15] = 200;
  RTVOICE_CHECK(!rtp::parse_rtp(bad, sizeof(bad), v));
  RTVOICE_CHECK(!rtp::parse_rtp(bad, 11, v));
}

void test_rtcp_roundtrip() {
  rtp::SenderInfo sender{rtp::ntp_from_unix_ns(1700000000123456789LL), 4800, 10, 700};
  rtp::ReportBlock block;
  block.ssrc = 0xCAFEu;
  block.fraction_lost = 64;
  block.cumulative_lost = -3;
  block.highest_seq = 70000;
  block.jitter = 96;
  block.lsr = 0x12345678u;
  block.dlsr = 65536;
  std::uint8_t buf[256];
  const std::size_t n = rtp::write_report(buf, sizeof(buf), 0xBEEFu, &sender, &block, "cname-x", 7);
  RTVOICE_CHECK(n > 0);
  RTVOICE_CHECK_EQ(n % 4, 0u);
  RTVOICE_CHECK(rtp::is_rtcp(buf, n));
  rtp::RtcpSummary s;
  RTVOICE_CHECK(rtp::parse_rtcp(buf, n, s));
  RTVOICE_CHECK_EQ(s.packets, 2);
  RTVOICE_CHECK(s.has_sr);
  RTVOICE_CHECK_EQ(s.sr_ssrc, 0xBEEFu);
  RTVOICE_CHECK(s.sr_ntp == sender.ntp);
  RTVOICE_CHECK_EQ(s.sr_rtp_timestamp, 4800u);
  RTVOICE_CHECK_EQ(s.sr_packets, 10u);
  RTVOICE_CHECK_EQ(s.blocks, 1);
  RTVOICE_CHECK_EQ(s.block[0].ssrc, 0xCAFEu);
  RTVOICE_CHECK_EQ(s.block[0].fraction_lost, 64);
  RTVOICE_CHECK_EQ(s.block[0].cumulative_lost, -3);
  RTVOICE_CHECK_EQ(s.block[0].highest_seq, 70000u);
  RTVOICE_CHECK_EQ(s.block[0].lsr, 0x12345678u);
  // An RR without a block, and truncated input.
  const std::size_t rr = rtp::write_report(buf, sizeof(buf), 7, nullptr, nullptr, "", 0);
  RTVOICE_CHECK(rtp::parse_rtcp(buf, rr, s));
  RTVOICE_CHECK(!s.has_sr);
  RTVOICE_CHECK_EQ(s.blocks, 0);
  RTVOICE_CHECK(!rtp::parse_rtcp(buf, rr - 1, s));
  RTVOICE_CHECK(!rtp::parse_rtcp(buf, 3, s));
  // The compact NTP form is the middle 32 bits.
  RTVOICE_CHECK_EQ(rtp::ntp_compact(0x0001234567890000ull), 0x23456789u);
}

void test_reception_stats() {
  rtp::ReceptionStats r(48000);
  r.reset(42);
  // 10 packets around the sequence wrap with two lost (65535 and 2), each 20 ms apart.
  const std::uint16_t seqs[] = {65530, 65531, 65532, 65533, 65534, 0, 1, 3, 4, 5};
  std::int64_t t = 1000000000;
  for (std::uint16_t s : seqs) {
    const std::uint32_t ts =
        static_cast<std::uint32_t>(static_cast<std::uint16_t>(s - 65530)) * 960u;
    r.on_packet(s, ts,
                t + static_cast<std::int64_t>(static_cast<std::uint16_t>(s - 65530)) * 20000000);
  }
  RTVOICE_CHECK_EQ(r.received(), 10u);
  RTVOICE_CHECK_EQ(r.cumulative_lost(), 2);
  RTVOICE_CHECK_EQ(r.extended_highest(), 65536u + 5u);
  RTVOICE_CHECK(r.jitter_rtp() < 1.0);  // perfectly paced
  rtp::ReportBlock b;
  r.make_block(b, 0, 0);
  RTVOICE_CHECK_EQ(b.cumulative_lost, 2);
  RTVOICE_CHECK_EQ(b.fraction_lost, (2 << 8) / 12);
  // The next interval with nothing lost reports 0.
  r.on_packet(6, 11 * 960, t + 11 * 20000000LL);
  r.make_block(b, 0, 0);
  RTVOICE_CHECK_EQ(b.fraction_lost, 0);
}

void test_srtp_profiles() {
  for (SrtpProfile p :
       {SrtpProfile::Aes128CmSha1_80, SrtpProfile::AeadAes128Gcm, SrtpProfile::AeadAes256Gcm}) {
    if (!srtp_profile_supported(p)) continue;
    std::vector<std::uint8_t> key(srtp_key_salt_length(p));
    for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(i * 7 + 1);
    SrtpSession tx(p, key.data(), key.size(), SrtpSession::Direction::Outbound);
    SrtpSession rx(p, key.data(), key.size(), SrtpSession::Direction::Inbound);
    std::uint8_t pkt[256];
    const std::uint8_t payload[20] = {9, 8, 7};
    rtp::HeaderExtensions none;
    std::size_t len =
        rtp::write_rtp(pkt, 100, 111, false, 5, 960, 77, none, 0, 0, false, payload, 20);
    const std::size_t plain = len;
    RTVOICE_CHECK_EQ(tx.protect(pkt, len, sizeof(pkt)), 0);
    RTVOICE_CHECK(len > plain);
    std::uint8_t copy[256];
    std::memcpy(copy, pkt, len);
    const std::size_t protected_len = len;
    RTVOICE_CHECK_EQ(rx.unprotect(pkt, len), 0);
    RTVOICE_CHECK_EQ(len, plain);
    rtp::RtpView v;
    RTVOICE_CHECK(rtp::parse_rtp(pkt, len, v));
    RTVOICE_CHECK_EQ(v.payload[0], 9);
    // A replay and a tampered packet are refused.
    std::size_t again = protected_len;
    RTVOICE_CHECK(rx.unprotect(copy, again) != 0);
    std::size_t tlen = plain;
    std::uint8_t t2[256];
    std::memcpy(t2, copy, protected_len);
    t2[2] ^= 0;  // same header, different sequence below
    tlen = rtp::write_rtp(t2, 100, 111, false, 6, 1920, 77, none, 0, 0, false, payload, 20);
    RTVOICE_CHECK_EQ(tx.protect(t2, tlen, sizeof(t2)), 0);
    t2[tlen - 1] ^= 0x01;
    RTVOICE_CHECK(rx.unprotect(t2, tlen) != 0);
    // RTCP both ways.
    std::uint8_t rep[256];
    std::size_t rlen = rtp::write_report(rep, 200, 77, nullptr, nullptr, "c", 1);
    const std::size_t rplain = rlen;
    RTVOICE_CHECK_EQ(tx.protect_rtcp(rep, rlen, sizeof(rep)), 0);
    RTVOICE_CHECK_EQ(rx.unprotect_rtcp(rep, rlen), 0);
    RTVOICE_CHECK_EQ(rlen, rplain);
    // Wrong key length.
    bool threw = false;
    try {
      SrtpSession bad(p, key.data(), key.size() - 1, SrtpSession::Direction::Outbound);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    RTVOICE_CHECK(threw);
  }
  RTVOICE_CHECK(srtp_profile_supported(SrtpProfile::Aes128CmSha1_80));
}

int udp_socket(sockaddr_in& addr) {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  RTVOICE_CHECK(fd >= 0);
  std::memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  RTVOICE_CHECK(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  RTVOICE_CHECK(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  return fd;
}

// Receives one datagram within timeout_ms (a bound on waiting, not a timing check).
std::size_t recv_one(int fd, std::uint8_t* buf, std::size_t cap, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return 0;
  const ssize_t n = recv(fd, buf, cap, 0);
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

void test_media_call_loopback() {
  sockaddr_in a_addr{}, b_addr{};
  const int a = udp_socket(a_addr);  // the call's socket
  const int b = udp_socket(b_addr);  // the peer
  std::vector<std::uint8_t> k_ab(srtp_key_salt_length(SrtpProfile::Aes128CmSha1_80), 0x11);
  std::vector<std::uint8_t> k_ba(k_ab.size(), 0x22);

  UplinkConfig uc;
  Uplink uplink(uc);
  DownlinkConfig dc;
  Downlink downlink(dc);
  std::atomic<bool> up_busy{false}, down_busy{false};
  MediaCallConfig c;
  c.fd = a;
  std::memcpy(&c.remote, &b_addr, sizeof(b_addr));
  c.remote_len = sizeof(b_addr);
  c.tx_key = k_ab;
  c.rx_key = k_ba;
  c.ssrc = 0x1234;
  c.payload_type = 111;
  c.seq_offset = 65530;  // wraps during the test
  c.timestamp_offset = 1000;
  c.cname = "test";
  c.rtcp_interval_ms = 100;
  auto call = std::make_shared<MediaCall>(c, &uplink, &up_busy, &downlink, &down_busy);
  // The call keeps its own descriptor: closing ours must not matter.
  close(a);
  SrtpSession peer_rx(SrtpProfile::Aes128CmSha1_80, k_ab.data(), k_ab.size(),
                      SrtpSession::Direction::Inbound);
  SrtpSession peer_tx(SrtpProfile::Aes128CmSha1_80, k_ba.data(), k_ba.size(),
                      SrtpSession::Direction::Outbound);
  std::vector<float> tone(48000 / 5);
  for (std::size_t i = 0; i < tone.size(); ++i) tone[i] = (i % 48 < 24) ? 0.2f : -0.2f;
  uplink.push(tone.data(), tone.size());

  MediaEngine& engine = MediaEngine::instance();
  engine.add(call);
  RTVOICE_CHECK(engine.stats().running);
  // 12 RTP packets in order, 960 samples apart, marker on the first only; RTCP among them.
  int rtp_seen = 0, rtcp_seen = 0;
  std::uint16_t last_seq = 0;
  std::uint32_t last_ts = 0;
  std::uint8_t buf[2048];
  for (int i = 0; i < 400 && (rtp_seen < 12 || rtcp_seen < 1); ++i) {
    std::size_t n = recv_one(b, buf, sizeof(buf), 1000);
    RTVOICE_CHECK(n > 0);
    if (rtp::is_rtcp(buf, n)) {
      RTVOICE_CHECK_EQ(peer_rx.unprotect_rtcp(buf, n), 0);
      rtp::RtcpSummary s;
      RTVOICE_CHECK(rtp::parse_rtcp(buf, n, s));
      RTVOICE_CHECK_EQ(s.sr_ssrc == 0x1234u || !s.has_sr, true);
      ++rtcp_seen;
      continue;
    }
    RTVOICE_CHECK_EQ(peer_rx.unprotect(buf, n), 0);
    rtp::RtpView v;
    RTVOICE_CHECK(rtp::parse_rtp(buf, n, v));
    RTVOICE_CHECK_EQ(v.ssrc, 0x1234u);
    RTVOICE_CHECK_EQ(v.payload_type, 111);
    RTVOICE_CHECK_EQ(v.marker, rtp_seen == 0);
    if (rtp_seen == 0) {
      RTVOICE_CHECK_EQ(v.seq, 65530);
      RTVOICE_CHECK_EQ(v.timestamp, 1000u);
    } else {
      RTVOICE_CHECK_EQ(static_cast<std::uint16_t>(v.seq - last_seq), 1);
      RTVOICE_CHECK_EQ(v.timestamp - last_ts, 960u);
    }
    last_seq = v.seq;
    last_ts = v.timestamp;
    ++rtp_seen;
  }
  RTVOICE_CHECK(rtp_seen >= 12);
  RTVOICE_CHECK(rtcp_seen >= 1);

  // Inbound: 5 SRTP packets from the peer reach the Downlink's queue; a forged one is counted;
  // a STUN-looking datagram waits for Python.
  sockaddr_in call_addr = a_addr;
  rtp::HeaderExtensions none;
  const std::uint8_t opus_silence[3] = {0xF8, 0xFF, 0xFE};
  for (int i = 0; i < 5; ++i) {
    std::size_t n = rtp::write_rtp(buf, 500, 111, i == 0, static_cast<std::uint16_t>(100 + i),
                                   static_cast<std::uint32_t>(i * 960), 0x9999, none, 0, 0, false,
                                   opus_silence, 3);
    RTVOICE_CHECK_EQ(peer_tx.protect(buf, n, sizeof(buf)), 0);
    RTVOICE_CHECK(sendto(b, buf, n, 0, reinterpret_cast<sockaddr*>(&call_addr),
                         sizeof(call_addr)) == static_cast<ssize_t>(n));
  }
  std::uint8_t forged[40] = {0x80, 111, 0, 1};
  sendto(b, forged, sizeof(forged), 0, reinterpret_cast<sockaddr*>(&call_addr), sizeof(call_addr));
  std::uint8_t stun[20] = {0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42};
  sendto(b, stun, sizeof(stun), 0, reinterpret_cast<sockaddr*>(&call_addr), sizeof(call_addr));
  // Wait (bounded) until the call has seen all 7 datagrams.
  for (int i = 0; i < 500 && call->stats().datagrams_received < 7; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(4));
  }
  // RTCP from the peer may have arrived too; count exactly what matters.
  const MediaCallStats s = call->stats();
  RTVOICE_CHECK_EQ(s.packets_received, 5u);
  RTVOICE_CHECK_EQ(s.remote_ssrc, 0x9999u);
  RTVOICE_CHECK_EQ(s.packets_lost, 0);
  RTVOICE_CHECK_EQ(s.srtp_errors, 1u);
  RTVOICE_CHECK_EQ(s.to_python, 1u);
  RTVOICE_CHECK(s.packets_sent >= 12);
  RTVOICE_CHECK(s.rtcp_sent >= 1);
  RTVOICE_CHECK_EQ(downlink.stats().packets_queued, 5u);
  std::uint8_t got[64];
  std::size_t got_len = 0;
  sockaddr_storage from{};
  socklen_t from_len = 0;
  RTVOICE_CHECK(call->pop_datagram(got, sizeof(got), got_len, from, from_len));
  RTVOICE_CHECK_EQ(got_len, sizeof(stun));
  RTVOICE_CHECK(std::memcmp(got, stun, sizeof(stun)) == 0);
  RTVOICE_CHECK_EQ(reinterpret_cast<sockaddr_in&>(from).sin_port, b_addr.sin_port);
  RTVOICE_CHECK(!call->pop_datagram(got, sizeof(got), got_len, from, from_len));

  // A closed send gate stops the packets (the count stays put once in-flight ones are out).
  call->set_send_open(false);
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  const std::uint64_t sent = call->stats().packets_sent;
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  RTVOICE_CHECK_EQ(call->stats().packets_sent, sent);

  engine.remove(call);
  RTVOICE_CHECK(!engine.stats().running);
  RTVOICE_CHECK_EQ(engine.stats().calls, 0u);
  close(b);
}

}  // namespace

int main() {
  test_rtp_roundtrip();
  test_rtcp_roundtrip();
  test_reception_stats();
  test_srtp_profiles();
  test_media_call_loopback();
  std::puts("test_media_path: ok");
  return 0;
}
