#include "rtvoice/rtp.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace rtvoice::rtp {
namespace {

std::uint16_t rd16(const std::uint8_t* p) { return static_cast<std::uint16_t>((p[0] << 8) | p[1]); }
std::uint32_t rd32(const std::uint8_t* p) {
  return (static_cast<std::uint32_t>(p[0]) << 24) | (static_cast<std::uint32_t>(p[1]) << 16) |
         (static_cast<std::uint32_t>(p[2]) << 8) | p[3];
}
void wr16(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
void wr32(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

constexpr std::uint8_t kSr = 200;
constexpr std::uint8_t kRr = 201;
constexpr std::uint8_t kSdes = 202;
constexpr std::uint8_t kBye = 203;

bool parse_blocks(const std::uint8_t* p, int count, RtcpSummary& out) {
  for (int i = 0; i < count; ++i, p += 24) {
    if (out.blocks >= kMaxParsedBlocks) continue;
    ReportBlock& b = out.block[out.blocks++];
    b.ssrc = rd32(p);
    b.fraction_lost = p[4];
    std::int32_t lost = static_cast<std::int32_t>((p[5] << 16) | (p[6] << 8) | p[7]);
    if (lost & 0x800000) lost -= 0x1000000;  // 24-bit two's complement
    b.cumulative_lost = lost;
    b.highest_seq = rd32(p + 8);
    b.jitter = rd32(p + 12);
    b.lsr = rd32(p + 16);
    b.dlsr = rd32(p + 20);
  }
  return true;
}

}  // namespace

bool parse_rtp(const std::uint8_t* data, std::size_t len, RtpView& out) {
  if (data == nullptr || len < kFixedHeaderBytes) return false;
  if ((data[0] >> 6) != 2) return false;
  const bool padding = (data[0] & 0x20) != 0;
  const bool extension = (data[0] & 0x10) != 0;
  const std::size_t csrcs = data[0] & 0x0F;
  std::size_t offset = kFixedHeaderBytes + 4 * csrcs;
  if (offset > len) return false;
  if (extension) {
    if (offset + 4 > len) return false;
    const std::size_t words = rd16(data + offset + 2);
    offset += 4 + 4 * words;
    if (offset > len) return false;
  }
  std::size_t end = len;
  if (padding) {
    const std::size_t pad = data[len - 1];
    if (pad == 0 || offset + pad > len) return false;
    end -= pad;
  }
  out.marker = (data[1] & 0x80) != 0;
  out.payload_type = data[1] & 0x7F;
  out.seq = rd16(data + 2);
  out.timestamp = rd32(data + 4);
  out.ssrc = rd32(data + 8);
  out.payload = data + offset;
  out.payload_len = end - offset;
  return true;
}

std::size_t write_rtp(std::uint8_t* out, std::size_t capacity, std::uint8_t payload_type,
                      bool marker, std::uint16_t seq, std::uint32_t timestamp, std::uint32_t ssrc,
                      const HeaderExtensions& ext, std::uint32_t abs_send_time,
                      std::uint8_t audio_level_dbov, bool voice, const std::uint8_t* payload,
                      std::size_t payload_len) {
  // The one-byte extension elements: each is (id << 4 | len - 1) then len bytes.
  std::size_t ext_bytes = 0;
  const bool mid =
      ext.mid_id > 0 && ext.mid_id < 15 && ext.mid_len > 0 && ext.mid_len <= kMaxMidBytes;
  const bool ast = ext.abs_send_time_id > 0 && ext.abs_send_time_id < 15;
  const bool level = ext.audio_level_id > 0 && ext.audio_level_id < 15;
  if (mid) ext_bytes += 1 + ext.mid_len;
  if (ast) ext_bytes += 1 + 3;
  if (level) ext_bytes += 1 + 1;
  const std::size_t ext_words = (ext_bytes + 3) / 4;
  const std::size_t header = kFixedHeaderBytes + (ext_bytes ? 4 + 4 * ext_words : 0);
  if (out == nullptr || header + payload_len > capacity) return 0;
  out[0] = static_cast<std::uint8_t>(0x80 | (ext_bytes ? 0x10 : 0));
  out[1] = static_cast<std::uint8_t>((marker ? 0x80 : 0) | (payload_type & 0x7F));
  wr16(out + 2, seq);
  wr32(out + 4, timestamp);
  wr32(out + 8, ssrc);
  if (ext_bytes) {
    std::uint8_t* p = out + kFixedHeaderBytes;
    wr16(p, 0xBEDE);
    wr16(p + 2, static_cast<std::uint32_t>(ext_words));
    p += 4;
    std::uint8_t* const start = p;
    if (mid) {
      *p++ = static_cast<std::uint8_t>((ext.mid_id << 4) | (ext.mid_len - 1));
      std::memcpy(p, ext.mid, ext.mid_len);
      p += ext.mid_len;
    }
    if (ast) {
      *p++ = static_cast<std::uint8_t>((ext.abs_send_time_id << 4) | 2);
      *p++ = static_cast<std::uint8_t>(abs_send_time >> 16);
      *p++ = static_cast<std::uint8_t>(abs_send_time >> 8);
      *p++ = static_cast<std::uint8_t>(abs_send_time);
    }
    if (level) {
      *p++ = static_cast<std::uint8_t>(ext.audio_level_id << 4);
      *p++ = static_cast<std::uint8_t>((voice ? 0x80 : 0) | (audio_level_dbov & 0x7F));
    }
    while (static_cast<std::size_t>(p - start) < 4 * ext_words) *p++ = 0;
  }
  if (payload_len) std::memcpy(out + header, payload, payload_len);
  return header + payload_len;
}

bool parse_rtcp(const std::uint8_t* data, std::size_t len, RtcpSummary& out) {
  out = RtcpSummary{};
  if (data == nullptr || len < 4) return false;
  std::size_t offset = 0;
  while (offset < len) {
    if (len - offset < 4) return false;
    const std::uint8_t* p = data + offset;
    if ((p[0] >> 6) != 2) return false;
    const int count = p[0] & 0x1F;
    const std::uint8_t type = p[1];
    const std::size_t bytes = 4 * (static_cast<std::size_t>(rd16(p + 2)) + 1);
    if (bytes > len - offset) return false;
    if (type == kSr) {
      if (bytes < 28 + 24 * static_cast<std::size_t>(count)) return false;
      if (!out.has_sr) {
        out.has_sr = true;
        out.sr_ssrc = rd32(p + 4);
        out.sr_ntp = (static_cast<std::uint64_t>(rd32(p + 8)) << 32) | rd32(p + 12);
        out.sr_rtp_timestamp = rd32(p + 16);
        out.sr_packets = rd32(p + 20);
        out.sr_octets = rd32(p + 24);
      }
      parse_blocks(p + 28, count, out);
    } else if (type == kRr) {
      if (bytes < 8 + 24 * static_cast<std::size_t>(count)) return false;
      parse_blocks(p + 8, count, out);
    } else if (type == kBye) {
      out.bye = true;
    }
    ++out.packets;
    offset += bytes;
  }
  return out.packets > 0;
}

std::size_t write_report(std::uint8_t* out, std::size_t capacity, std::uint32_t ssrc,
                         const SenderInfo* sender, const ReportBlock* block, const char* cname,
                         std::size_t cname_len) {
  if (cname_len > 255) cname_len = 255;
  const std::size_t blocks = block != nullptr ? 1 : 0;
  const std::size_t report = (sender != nullptr ? 28 : 8) + 24 * blocks;
  // SDES: header, SSRC, item (type 1, length, text), then a null item terminating the chunk and
  // padding to a 32-bit boundary.
  const std::size_t sdes_items = 2 + cname_len + 1;
  const std::size_t sdes = 8 + ((sdes_items + 3) / 4) * 4;
  if (out == nullptr || report + sdes > capacity) return 0;
  std::uint8_t* p = out;
  p[0] = static_cast<std::uint8_t>(0x80 | blocks);
  p[1] = sender != nullptr ? kSr : kRr;
  wr16(p + 2, static_cast<std::uint32_t>(report / 4 - 1));
  wr32(p + 4, ssrc);
  std::size_t at = 8;
  if (sender != nullptr) {
    wr32(p + 8, static_cast<std::uint32_t>(sender->ntp >> 32));
    wr32(p + 12, static_cast<std::uint32_t>(sender->ntp));
    wr32(p + 16, sender->rtp_timestamp);
    wr32(p + 20, sender->packets);
    wr32(p + 24, sender->octets);
    at = 28;
  }
  if (block != nullptr) {
    std::uint8_t* b = p + at;
    wr32(b, block->ssrc);
    b[4] = block->fraction_lost;
    std::int32_t lost = block->cumulative_lost;
    if (lost > 0x7FFFFF) lost = 0x7FFFFF;
    if (lost < -0x800000) lost = -0x800000;
    const auto l = static_cast<std::uint32_t>(lost) & 0xFFFFFFu;
    b[5] = static_cast<std::uint8_t>(l >> 16);
    b[6] = static_cast<std::uint8_t>(l >> 8);
    b[7] = static_cast<std::uint8_t>(l);
    wr32(b + 8, block->highest_seq);
    wr32(b + 12, block->jitter);
    wr32(b + 16, block->lsr);
    wr32(b + 20, block->dlsr);
  }
  p = out + report;
  p[0] = 0x81;  // one chunk
  p[1] = kSdes;
  wr16(p + 2, static_cast<std::uint32_t>(sdes / 4 - 1));
  wr32(p + 4, ssrc);
  p[8] = 1;  // CNAME
  p[9] = static_cast<std::uint8_t>(cname_len);
  if (cname_len) std::memcpy(p + 10, cname, cname_len);
  for (std::size_t i = 10 + cname_len; i < sdes; ++i) p[i] = 0;
  return report + sdes;
}

std::uint64_t ntp_from_unix_ns(std::int64_t unix_ns) {
  constexpr std::uint64_t kNtpUnixOffsetS = 2208988800ull;
  if (unix_ns < 0) unix_ns = 0;
  const auto ns = static_cast<std::uint64_t>(unix_ns);
  const std::uint64_t seconds = ns / 1000000000ull + kNtpUnixOffsetS;
  const std::uint64_t frac = ((ns % 1000000000ull) << 32) / 1000000000ull;
  return (seconds << 32) | frac;
}

void ReceptionStats::reset(std::uint32_t ssrc) {
  *this = ReceptionStats(clock_hz_);
  ssrc_ = ssrc;
}

void ReceptionStats::on_packet(std::uint16_t seq, std::uint32_t timestamp,
                               std::int64_t arrival_ns) {
  constexpr int kMaxDropout = 3000;
  if (received_ == 0) {
    base_seq_ = seq;
    max_seq_ = seq;
  } else {
    const std::uint16_t delta = static_cast<std::uint16_t>(seq - max_seq_);
    if (delta != 0 && delta < kMaxDropout) {
      if (seq < max_seq_) cycles_ += 65536;  // wrapped
      max_seq_ = seq;
    } else if (delta != 0 && delta <= 65535 - 100) {
      // A large jump that is not a reordering: the sender restarted; start over from here.
      const std::uint32_t ssrc = ssrc_;
      reset(ssrc);
      base_seq_ = seq;
      max_seq_ = seq;
    }
  }
  ++received_;
  // Interarrival jitter (A.8) in RTP units.
  const std::int64_t arrival_rtp =
      static_cast<std::int64_t>(static_cast<double>(arrival_ns) * clock_hz_ / 1e9);
  const std::int64_t transit = arrival_rtp - static_cast<std::int64_t>(timestamp);
  if (have_transit_) {
    std::int64_t d = transit - transit_;
    // Timestamps wrap at 2^32: take the difference modulo 2^32 as a signed number.
    d = static_cast<std::int32_t>(static_cast<std::uint32_t>(d));
    jitter_ += (std::fabs(static_cast<double>(d)) - jitter_) / 16.0;
  }
  transit_ = transit;
  have_transit_ = true;
}

std::int64_t ReceptionStats::cumulative_lost() const {
  if (received_ == 0) return 0;
  const std::int64_t expected =
      static_cast<std::int64_t>(extended_highest()) - static_cast<std::int64_t>(base_seq_) + 1;
  return expected - static_cast<std::int64_t>(received_);
}

void ReceptionStats::make_block(ReportBlock& block, std::uint32_t lsr, std::uint32_t dlsr) {
  const std::uint64_t expected = static_cast<std::uint64_t>(
      static_cast<std::int64_t>(extended_highest()) - static_cast<std::int64_t>(base_seq_) + 1);
  const std::int64_t expected_interval =
      static_cast<std::int64_t>(expected) - static_cast<std::int64_t>(expected_prior_);
  const std::int64_t received_interval =
      static_cast<std::int64_t>(received_) - static_cast<std::int64_t>(received_prior_);
  expected_prior_ = expected;
  received_prior_ = received_;
  const std::int64_t lost_interval = expected_interval - received_interval;
  block.ssrc = ssrc_;
  block.fraction_lost = (expected_interval <= 0 || lost_interval <= 0)
                            ? 0
                            : static_cast<std::uint8_t>(std::min<std::int64_t>(
                                  255, (lost_interval << 8) / expected_interval));
  const std::int64_t lost = cumulative_lost();
  block.cumulative_lost =
      static_cast<std::int32_t>(lost > 0x7FFFFF ? 0x7FFFFF : (lost < -0x800000 ? -0x800000 : lost));
  block.highest_seq = extended_highest();
  block.jitter = static_cast<std::uint32_t>(jitter_);
  block.lsr = lsr;
  block.dlsr = dlsr;
}

}  // namespace rtvoice::rtp
