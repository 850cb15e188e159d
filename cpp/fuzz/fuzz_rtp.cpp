// Fuzzes the native media path's parsers with arbitrary datagrams: parse_rtp() must keep the
// payload inside the input, parse_rtcp() must keep its counts in bounds, and a written packet
// or report must parse back to what was written. ReceptionStats takes any sequence numbers.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fuzz_input.hpp"
#include "rtvoice/rtp.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace rtvoice;
  rtp::RtpView v;
  if (rtp::parse_rtp(data, size, v)) {
    RTVOICE_FUZZ_CHECK(v.payload >= data && v.payload + v.payload_len <= data + size);
    RTVOICE_FUZZ_CHECK(v.payload_type < 128);
  }
  rtp::RtcpSummary s;
  if (rtp::parse_rtcp(data, size, s)) {
    RTVOICE_FUZZ_CHECK(s.packets > 0);
    RTVOICE_FUZZ_CHECK(s.blocks >= 0 && s.blocks <= rtp::kMaxParsedBlocks);
  }
  (void)rtp::classify(size ? data[0] : 0);

  fuzz::Input in(data, size);
  rtp::HeaderExtensions ext;
  ext.mid_id = in.u8() % 16;
  ext.mid_len = in.u8() % (rtp::kMaxMidBytes + 1);
  for (std::size_t i = 0; i < ext.mid_len; ++i) ext.mid[i] = static_cast<char>(in.u8());
  ext.abs_send_time_id = in.u8() % 16;
  const std::uint8_t pt = in.u8() & 0x7F;
  const std::uint16_t seq = in.u16();
  const std::uint32_t ts = in.u32();
  const std::uint32_t ssrc = in.u32();
  std::uint8_t payload[64];
  const std::size_t plen = in.u8() % sizeof(payload);
  for (std::size_t i = 0; i < plen; ++i) payload[i] = in.u8();
  std::uint8_t out[256];
  const std::size_t n = rtp::write_rtp(out, sizeof(out), pt, false, seq, ts, ssrc, ext, in.u32(), 0,
                                       false, payload, plen);
  if (n > 0) {
    rtp::RtpView w;
    RTVOICE_FUZZ_CHECK(rtp::parse_rtp(out, n, w));
    RTVOICE_FUZZ_CHECK(w.seq == seq && w.timestamp == ts && w.ssrc == ssrc);
    RTVOICE_FUZZ_CHECK(w.payload_type == pt && w.payload_len == plen);
    RTVOICE_FUZZ_CHECK(plen == 0 || std::memcmp(w.payload, payload, plen) == 0);
  }
  rtp::ReportBlock block;
  block.ssrc = in.u32();
  block.cumulative_lost = static_cast<std::int32_t>(in.u32());
  char cname[40];
  const std::size_t clen = in.u8() % sizeof(cname);
  for (std::size_t i = 0; i < clen; ++i) cname[i] = static_cast<char>(in.u8());
  const std::size_t r = rtp::write_report(out, sizeof(out), ssrc, nullptr, &block, cname, clen);
  if (r > 0) {
    rtp::RtcpSummary t;
    RTVOICE_FUZZ_CHECK(rtp::parse_rtcp(out, r, t));
    RTVOICE_FUZZ_CHECK(t.blocks == 1 && t.block[0].ssrc == block.ssrc);
  }
  rtp::ReceptionStats stats(48000);
  stats.reset(1);
  std::int64_t t_ns = 0;
  while (!in.empty()) {
    t_ns += in.u8() * 1000000LL;
    stats.on_packet(in.u16(), in.u32(), t_ns);
  }
  rtp::ReportBlock b;
  stats.make_block(b, 0, 0);
  return 0;
}
