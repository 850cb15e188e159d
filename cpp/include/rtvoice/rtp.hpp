// RTP and RTCP packets of the native media path (RFC 3550, RFC 5761 multiplexing, RFC 8285
// one-byte header extensions). Pure functions on caller-owned buffers: no allocation, no I/O.
// Every parser takes untrusted bytes and returns false on anything malformed.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rtvoice::rtp {

inline constexpr std::size_t kFixedHeaderBytes = 12;
inline constexpr int kMaxReportBlocks = 31;  // the 5-bit count of an SR/RR
inline constexpr int kMaxParsedBlocks = 8;   // report blocks kept per parsed compound packet
inline constexpr std::size_t kMaxMidBytes = 16;

// RFC 7983: what a datagram on a WebRTC 5-tuple is, by its first byte.
enum class DatagramKind : std::uint8_t { Stun, Dtls, Media, Other };
inline DatagramKind classify(std::uint8_t first_byte) {
  if (first_byte <= 3) return DatagramKind::Stun;
  if (first_byte >= 20 && first_byte <= 63) return DatagramKind::Dtls;
  if (first_byte >= 128 && first_byte <= 191) return DatagramKind::Media;
  return DatagramKind::Other;
}

// RFC 5761 section 4: RTCP packet types 192-223 in the second byte; RTP payload types 64-95
// (which would collide) are never used by an RTP stream multiplexed with RTCP.
inline bool is_rtcp(const std::uint8_t* data, std::size_t len) {
  return len >= 2 && data[1] >= 192 && data[1] <= 223;
}

struct RtpView {
  std::uint8_t payload_type = 0;
  bool marker = false;
  std::uint16_t seq = 0;
  std::uint32_t timestamp = 0;
  std::uint32_t ssrc = 0;
  const std::uint8_t* payload = nullptr;
  std::size_t payload_len = 0;
};

// Version 2, CSRCs, a header extension and padding are checked against len.
bool parse_rtp(const std::uint8_t* data, std::size_t len, RtpView& out);

// One-byte header extensions (RFC 8285) to write on each outbound packet; an id of 0 means
// "not negotiated".
struct HeaderExtensions {
  int mid_id = 0;
  char mid[kMaxMidBytes] = {};
  std::size_t mid_len = 0;
  int abs_send_time_id = 0;
  int audio_level_id = 0;
};

// Writes header (and extensions) + payload into out; returns the packet length, or 0 when it
// does not fit into capacity. abs_send_time is the 24-bit 6.18 fixed-point NTP seconds;
// audio_level_dbov is 0..127 (-dBov) with the voice flag.
std::size_t write_rtp(std::uint8_t* out, std::size_t capacity, std::uint8_t payload_type,
                      bool marker, std::uint16_t seq, std::uint32_t timestamp, std::uint32_t ssrc,
                      const HeaderExtensions& ext, std::uint32_t abs_send_time,
                      std::uint8_t audio_level_dbov, bool voice, const std::uint8_t* payload,
                      std::size_t payload_len);

struct ReportBlock {
  std::uint32_t ssrc = 0;
  std::uint8_t fraction_lost = 0;
  std::int32_t cumulative_lost = 0;  // 24-bit signed
  std::uint32_t highest_seq = 0;
  std::uint32_t jitter = 0;
  std::uint32_t lsr = 0;
  std::uint32_t dlsr = 0;
};

// What a compound RTCP packet says (the blocks of SRs and RRs together).
struct RtcpSummary {
  int packets = 0;
  bool has_sr = false;
  std::uint32_t sr_ssrc = 0;
  std::uint64_t sr_ntp = 0;
  std::uint32_t sr_rtp_timestamp = 0;
  std::uint32_t sr_packets = 0;
  std::uint32_t sr_octets = 0;
  int blocks = 0;
  ReportBlock block[kMaxParsedBlocks];
  bool bye = false;
};

// A compound packet: each part's version, length and block count are checked.
bool parse_rtcp(const std::uint8_t* data, std::size_t len, RtcpSummary& out);

struct SenderInfo {
  std::uint64_t ntp = 0;
  std::uint32_t rtp_timestamp = 0;
  std::uint32_t packets = 0;
  std::uint32_t octets = 0;
};

// A compound report: an SR (when sender is given) or an RR from ssrc with at most one report
// block, then an SDES with the CNAME (RFC 3550 section 6.1). Returns its length, 0 if it does
// not fit.
std::size_t write_report(std::uint8_t* out, std::size_t capacity, std::uint32_t ssrc,
                         const SenderInfo* sender, const ReportBlock* block, const char* cname,
                         std::size_t cname_len);

// NTP time (64-bit, seconds since 1900 in 32.32) from Unix nanoseconds, and its middle 32 bits
// (the "compact" form of LSR/DLSR).
std::uint64_t ntp_from_unix_ns(std::int64_t unix_ns);
inline std::uint32_t ntp_compact(std::uint64_t ntp) {
  return static_cast<std::uint32_t>((ntp >> 16) & 0xFFFFFFFFu);
}

// RFC 3550 appendix A.1, A.3 and A.8: what one receiver knows about one inbound source.
class ReceptionStats {
 public:
  // clock_hz: the RTP clock. arrival in ns of any monotonic clock.
  explicit ReceptionStats(int clock_hz = 48000) : clock_hz_(clock_hz) {}
  void reset(std::uint32_t ssrc);
  // Every packet counts as received; the highest sequence advances with wrap-around, and a jump
  // of more than 3000 (a restarted sender) starts the counts over.
  void on_packet(std::uint16_t seq, std::uint32_t timestamp, std::int64_t arrival_ns);
  bool any() const { return received_ > 0; }
  std::uint32_t ssrc() const { return ssrc_; }
  std::uint64_t received() const { return received_; }
  std::uint32_t extended_highest() const { return cycles_ + max_seq_; }
  std::int64_t cumulative_lost() const;
  double jitter_rtp() const { return jitter_; }
  // Fills a report block and starts the next interval.
  void make_block(ReportBlock& block, std::uint32_t lsr, std::uint32_t dlsr);

 private:
  int clock_hz_;
  std::uint32_t ssrc_ = 0;
  std::uint16_t max_seq_ = 0;
  std::uint32_t cycles_ = 0;
  std::uint32_t base_seq_ = 0;
  std::uint64_t received_ = 0;
  std::uint64_t expected_prior_ = 0;
  std::uint64_t received_prior_ = 0;
  double jitter_ = 0.0;
  bool have_transit_ = false;
  std::int64_t transit_ = 0;
};

}  // namespace rtvoice::rtp
