// Opus encoder and decoder over libopus, with in-band FEC (LBRR) support.
//
// Each object is owned by one thread: no internal locking, no allocation after construction
// (libopus state is allocated once in the constructor). The hot-path calls (encode, decode,
// decode_fec, conceal) never throw; they return a negative libopus error code (OPUS_BAD_ARG,
// OPUS_INVALID_PACKET, ...) instead. Constructors and setters throw: std::invalid_argument for
// values outside the documented ranges, OpusError when libopus refuses.
//
// Audio is interleaved float (nominal range [-1, 1]) or int16. "samples" always counts samples
// per channel; a buffer of N samples holds N * channels values.
//
// Only libopus >= 1.3 API is used. Features of later versions (DRED, deep PLC,
// opus_packet_has_lbrr) are not assumed; libopus_version() reports what is linked at run time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

// libopus's opaque state types (opus.h: typedef struct OpusEncoder OpusEncoder).
struct OpusEncoder;
struct OpusDecoder;

namespace rtvoice {

// Carries the libopus error code; what() is "<context>: <opus_strerror(code)> (code <code>)".
class OpusError : public std::runtime_error {
 public:
  OpusError(int code, const std::string& context);
  int code() const { return code_; }

 private:
  int code_;
};

// The libopus library linked at run time, parsed from opus_get_version_string().
struct LibopusVersion {
  std::string text;  // e.g. "libopus 1.3.1"
  int major = 0;     // 0 when the string could not be parsed
  int minor = 0;
  int patch = 0;
  bool at_least(int maj, int min) const { return major > maj || (major == maj && minor >= min); }
};
const LibopusVersion& libopus_version();

// Sample rates libopus encodes and decodes at; any other rate is rejected.
bool opus_rate_supported(int sample_rate_hz);

// Largest packet accepted by the decoder and the size of a buffer that holds any encoder output:
// up to 60 ms carries at most three 1275-byte frames (RFC 6716 §3.2.1) plus a code-3 header of
// at most 6 bytes (TOC, frame count, two 2-byte frame lengths). Longer packets are refused with
// OPUS_INVALID_PACKET without being parsed.
inline constexpr int kOpusMaxPacketBytes = 3 * 1275 + 6;

// Longest Opus packet duration (RFC 6716): 120 ms.
inline constexpr int kOpusMaxPacketMs = 120;

enum class OpusApplication { Voip, Audio, RestrictedLowDelay };

struct OpusEncoderConfig {
  int sample_rate_hz = 48000;  // 8000, 12000, 16000, 24000 or 48000
  int channels = 1;            // 1 or 2
  OpusApplication application = OpusApplication::Voip;
  int bitrate_bps = 32000;    // 6000 ..= 510000
  int complexity = 9;         // 0 ..= 10
  bool fec = true;            // in-band FEC (LBRR); also needs packet_loss_perc > 0
  int packet_loss_perc = 10;  // expected loss, 0 ..= 100
  bool dtx = false;           // discontinuous transmission: 1-2 byte packets during silence
};

class OpusEncoder {
 public:
  static constexpr int kMinBitrateBps = 6000;
  static constexpr int kMaxBitrateBps = 510000;

  explicit OpusEncoder(const OpusEncoderConfig& config);
  ~OpusEncoder();
  OpusEncoder(OpusEncoder&&) noexcept;
  OpusEncoder& operator=(OpusEncoder&&) noexcept;
  OpusEncoder(const OpusEncoder&) = delete;
  OpusEncoder& operator=(const OpusEncoder&) = delete;

  // True when frame_samples is 10, 20, 40 or 60 ms at sample_rate_hz.
  static bool frame_samples_valid(int sample_rate_hz, int frame_samples);

  // Encodes one frame of frame_samples samples per channel (10/20/40/60 ms, interleaved).
  // Returns the packet length in bytes written to out, or a negative libopus error code
  // (OPUS_BAD_ARG for a bad frame size or null pointer). Never throws, never allocates.
  // Non-finite float samples are coded as 0 and counted (nonfinite_samples(); sanitize.hpp).
  int encode(const float* pcm, int frame_samples, std::uint8_t* out, int out_capacity);
  int encode(const std::int16_t* pcm, int frame_samples, std::uint8_t* out, int out_capacity);

  // Take effect from the next encode(). Throw std::invalid_argument outside the ranges of
  // OpusEncoderConfig and OpusError if libopus refuses.
  void set_bitrate(int bps);
  void set_fec(bool enabled);
  void set_packet_loss_perc(int percent);
  void set_dtx(bool enabled);
  void set_complexity(int complexity);

  // Clears the coding history (as for a new stream); settings are kept.
  void reset();

  // Current settings (kept in sync by the setters).
  const OpusEncoderConfig& config() const { return config_; }
  int sample_rate_hz() const { return config_.sample_rate_hz; }
  int channels() const { return config_.channels; }

  // Samples per channel by which decoded output lags the input (OPUS_GET_LOOKAHEAD).
  int lookahead_samples() const;
  // Range coder state after the last encode (OPUS_GET_FINAL_RANGE); equals the decoder's after
  // decoding the same packet.
  std::uint32_t final_range() const;
  // True when the last encoded frame was classified as silence under DTX (OPUS_GET_IN_DTX).
  bool in_dtx() const;
  // Float samples replaced by 0 because they were NaN or infinite, since construction.
  std::uint64_t nonfinite_samples() const { return nonfinite_samples_; }

 private:
  struct Deleter {
    void operator()(::OpusEncoder* st) const noexcept;
  };
  void ctl_or_throw(int result, const char* what);
  std::unique_ptr<::OpusEncoder, Deleter> st_;
  OpusEncoderConfig config_;
  std::vector<float> scratch_;  // one 60 ms frame: where non-finite input is replaced
  std::uint64_t nonfinite_samples_ = 0;
};

class OpusDecoder {
 public:
  // sample_rate_hz: 8000, 12000, 16000, 24000 or 48000; channels: 1 or 2. Throws
  // std::invalid_argument or OpusError.
  OpusDecoder(int sample_rate_hz, int channels);
  ~OpusDecoder();
  OpusDecoder(OpusDecoder&&) noexcept;
  OpusDecoder& operator=(OpusDecoder&&) noexcept;
  OpusDecoder(const OpusDecoder&) = delete;
  OpusDecoder& operator=(const OpusDecoder&) = delete;

  // All return samples per channel written to out (which holds max_frame_samples or
  // frame_samples times channels values) or a negative libopus code. Never throw or allocate.

  // Decodes one packet. An empty or null packet is OPUS_BAD_ARG (a lost packet is conceal()ed
  // or recovered with decode_fec(), not decoded); a packet over kOpusMaxPacketBytes is
  // OPUS_INVALID_PACKET; a packet longer than max_frame_samples is OPUS_BUFFER_TOO_SMALL.
  int decode(const std::uint8_t* packet, std::size_t bytes, float* out, int max_frame_samples);
  int decode(const std::uint8_t* packet, std::size_t bytes, std::int16_t* out,
             int max_frame_samples);

  // Recovers the frame BEFORE next_packet from next_packet's in-band FEC (LBRR) data.
  // frame_samples is the duration of the missing audio, a multiple of 2.5 ms up to 120 ms.
  // When next_packet carries no LBRR data (packet_has_fec() false, e.g. CELT-only), libopus
  // conceals instead; the same when frame_samples is shorter than next_packet's frames. When
  // frame_samples is longer, the leading part is concealed and only the last frame_samples of
  // next_packet's duration come from LBRR. Call decode(next_packet) afterwards as usual.
  int decode_fec(const std::uint8_t* next_packet, std::size_t bytes, float* out, int frame_samples);
  int decode_fec(const std::uint8_t* next_packet, std::size_t bytes, std::int16_t* out,
                 int frame_samples);

  // Packet loss concealment for frame_samples (a multiple of 2.5 ms up to 120 ms).
  int conceal(float* out, int frame_samples);
  int conceal(std::int16_t* out, int frame_samples);

  // Clears the decoding history (as for a new stream).
  void reset();

  int sample_rate_hz() const { return sample_rate_hz_; }
  int channels() const { return channels_; }
  // Duration of the last decode/decode_fec/conceal output (OPUS_GET_LAST_PACKET_DURATION).
  int last_packet_duration_samples() const;
  // Range coder state after the last decode (OPUS_GET_FINAL_RANGE).
  std::uint32_t final_range() const;

  // True when frame_samples is a multiple of 2.5 ms in (0, 120 ms] at sample_rate_hz, the
  // durations decode_fec() and conceal() accept.
  static bool gap_samples_valid(int sample_rate_hz, int frame_samples);

  // Samples per channel in packet at sample_rate_hz, or a negative libopus code (OPUS_BAD_ARG
  // for an empty packet or unsupported rate, OPUS_INVALID_PACKET for a malformed TOC/frame
  // count or a packet over kOpusMaxPacketBytes). Reads the header only.
  static int packet_samples(const std::uint8_t* packet, std::size_t bytes, int sample_rate_hz);

  // True when the packet's first frame carries LBRR (in-band FEC) data for the previous frame,
  // i.e. decode_fec() on it yields FEC-decoded audio rather than concealment. False for
  // CELT-only, malformed, empty or DTX packets. Parses the TOC and the first SILK header bits
  // itself (libopus < 1.5 has no opus_packet_has_lbrr).
  static bool packet_has_fec(const std::uint8_t* packet, std::size_t bytes);

 private:
  struct Deleter {
    void operator()(::OpusDecoder* st) const noexcept;
  };
  std::unique_ptr<::OpusDecoder, Deleter> st_;
  int sample_rate_hz_;
  int channels_;
};

}  // namespace rtvoice
