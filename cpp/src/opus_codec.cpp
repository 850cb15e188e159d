#include "rtvoice/opus_codec.hpp"

#include "rtvoice/sanitize.hpp"

#include <opus.h>

#include <cstdio>
#include <string>

namespace rtvoice {

namespace {

int application_code(OpusApplication app) {
  switch (app) {
    case OpusApplication::Voip:
      return OPUS_APPLICATION_VOIP;
    case OpusApplication::Audio:
      return OPUS_APPLICATION_AUDIO;
    case OpusApplication::RestrictedLowDelay:
      return OPUS_APPLICATION_RESTRICTED_LOWDELAY;
  }
  throw std::invalid_argument("unknown OpusApplication");
}

void check_rate_channels(int sample_rate_hz, int channels) {
  if (!opus_rate_supported(sample_rate_hz)) {
    throw std::invalid_argument("sample_rate must be 8000, 12000, 16000, 24000 or 48000 Hz, got " +
                                std::to_string(sample_rate_hz));
  }
  if (channels != 1 && channels != 2) {
    throw std::invalid_argument("channels must be 1 or 2, got " + std::to_string(channels));
  }
}

void check_range(const char* name, int value, int lo, int hi) {
  if (value < lo || value > hi) {
    throw std::invalid_argument(std::string(name) + " must be between " + std::to_string(lo) +
                                " and " + std::to_string(hi) + ", got " + std::to_string(value));
  }
}

LibopusVersion parse_version() {
  LibopusVersion v;
  const char* s = opus_get_version_string();
  v.text = s != nullptr ? s : "";
  int maj = 0, min = 0, pat = 0;
  const int n = std::sscanf(v.text.c_str(), "libopus %d.%d.%d", &maj, &min, &pat);
  if (n >= 2) {
    v.major = maj;
    v.minor = min;
    v.patch = n == 3 ? pat : 0;
  }
  return v;
}

}  // namespace

OpusError::OpusError(int code, const std::string& context)
    : std::runtime_error(context + ": " + opus_strerror(code) + " (code " + std::to_string(code) +
                         ")"),
      code_(code) {}

const LibopusVersion& libopus_version() {
  static const LibopusVersion version = parse_version();
  return version;
}

bool opus_rate_supported(int sample_rate_hz) {
  switch (sample_rate_hz) {
    case 8000:
    case 12000:
    case 16000:
    case 24000:
    case 48000:
      return true;
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Encoder

void OpusEncoder::Deleter::operator()(::OpusEncoder* st) const noexcept {
  opus_encoder_destroy(st);
}

OpusEncoder::OpusEncoder(const OpusEncoderConfig& config) : config_(config) {
  check_rate_channels(config.sample_rate_hz, config.channels);
  const int app = application_code(config.application);
  check_range("bitrate", config.bitrate_bps, kMinBitrateBps, kMaxBitrateBps);
  check_range("complexity", config.complexity, 0, 10);
  check_range("packet_loss_perc", config.packet_loss_perc, 0, 100);

  int err = OPUS_OK;
  st_.reset(opus_encoder_create(config.sample_rate_hz, config.channels, app, &err));
  if (err != OPUS_OK || !st_)
    throw OpusError(err != OPUS_OK ? err : OPUS_ALLOC_FAIL, "opus_encoder_create");
  ctl_or_throw(opus_encoder_ctl(st_.get(), OPUS_SET_BITRATE(config.bitrate_bps)),
               "OPUS_SET_BITRATE");
  ctl_or_throw(opus_encoder_ctl(st_.get(), OPUS_SET_COMPLEXITY(config.complexity)),
               "OPUS_SET_COMPLEXITY");
  ctl_or_throw(opus_encoder_ctl(st_.get(), OPUS_SET_INBAND_FEC(config.fec ? 1 : 0)),
               "OPUS_SET_INBAND_FEC");
  ctl_or_throw(opus_encoder_ctl(st_.get(), OPUS_SET_PACKET_LOSS_PERC(config.packet_loss_perc)),
               "OPUS_SET_PACKET_LOSS_PERC");
  ctl_or_throw(opus_encoder_ctl(st_.get(), OPUS_SET_DTX(config.dtx ? 1 : 0)), "OPUS_SET_DTX");
  scratch_.resize(static_cast<std::size_t>(config.sample_rate_hz / 100 * 6 * config.channels));
}

OpusEncoder::~OpusEncoder() = default;
OpusEncoder::OpusEncoder(OpusEncoder&&) noexcept = default;
OpusEncoder& OpusEncoder::operator=(OpusEncoder&&) noexcept = default;

void OpusEncoder::ctl_or_throw(int result, const char* what) {
  if (result != OPUS_OK) throw OpusError(result, what);
}

bool OpusEncoder::frame_samples_valid(int sample_rate_hz, int frame_samples) {
  if (!opus_rate_supported(sample_rate_hz)) return false;
  const int per_10ms = sample_rate_hz / 100;
  return frame_samples == per_10ms || frame_samples == 2 * per_10ms ||
         frame_samples == 4 * per_10ms || frame_samples == 6 * per_10ms;
}

int OpusEncoder::encode(const float* pcm, int frame_samples, std::uint8_t* out, int out_capacity) {
  if (!st_ || pcm == nullptr || out == nullptr) return OPUS_BAD_ARG;
  if (!frame_samples_valid(config_.sample_rate_hz, frame_samples)) return OPUS_BAD_ARG;
  if (out_capacity <= 0) return OPUS_BUFFER_TOO_SMALL;
  const std::size_t values =
      static_cast<std::size_t>(frame_samples) * static_cast<std::size_t>(config_.channels);
  if (!all_finite(pcm, values)) {
    nonfinite_samples_ += copy_finite(pcm, scratch_.data(), values);
    pcm = scratch_.data();
  }
  return opus_encode_float(st_.get(), pcm, frame_samples, out, out_capacity);
}

int OpusEncoder::encode(const std::int16_t* pcm, int frame_samples, std::uint8_t* out,
                        int out_capacity) {
  if (!st_ || pcm == nullptr || out == nullptr) return OPUS_BAD_ARG;
  if (!frame_samples_valid(config_.sample_rate_hz, frame_samples)) return OPUS_BAD_ARG;
  if (out_capacity <= 0) return OPUS_BUFFER_TOO_SMALL;
  return opus_encode(st_.get(), pcm, frame_samples, out, out_capacity);
}

void OpusEncoder::set_bitrate(int bps) {
  check_range("bitrate", bps, kMinBitrateBps, kMaxBitrateBps);
  ctl_or_throw(opus_encoder_ctl(st_.get(), OPUS_SET_BITRATE(bps)), "OPUS_SET_BITRATE");
  config_.bitrate_bps = bps;
}

void OpusEncoder::set_fec(bool enabled) {
  ctl_or_throw(opus_encoder_ctl(st_.get(), OPUS_SET_INBAND_FEC(enabled ? 1 : 0)),
               "OPUS_SET_INBAND_FEC");
  config_.fec = enabled;
}

void OpusEncoder::set_packet_loss_perc(int percent) {
  check_range("packet_loss_perc", percent, 0, 100);
  ctl_or_throw(opus_encoder_ctl(st_.get(), OPUS_SET_PACKET_LOSS_PERC(percent)),
               "OPUS_SET_PACKET_LOSS_PERC");
  config_.packet_loss_perc = percent;
}

void OpusEncoder::set_dtx(bool enabled) {
  ctl_or_throw(opus_encoder_ctl(st_.get(), OPUS_SET_DTX(enabled ? 1 : 0)), "OPUS_SET_DTX");
  config_.dtx = enabled;
}

void OpusEncoder::set_complexity(int complexity) {
  check_range("complexity", complexity, 0, 10);
  ctl_or_throw(opus_encoder_ctl(st_.get(), OPUS_SET_COMPLEXITY(complexity)), "OPUS_SET_COMPLEXITY");
  config_.complexity = complexity;
}

void OpusEncoder::reset() {
  ctl_or_throw(opus_encoder_ctl(st_.get(), OPUS_RESET_STATE), "OPUS_RESET_STATE");
}

int OpusEncoder::lookahead_samples() const {
  opus_int32 value = 0;
  const int r = opus_encoder_ctl(st_.get(), OPUS_GET_LOOKAHEAD(&value));
  if (r != OPUS_OK) throw OpusError(r, "OPUS_GET_LOOKAHEAD");
  return static_cast<int>(value);
}

std::uint32_t OpusEncoder::final_range() const {
  opus_uint32 value = 0;
  const int r = opus_encoder_ctl(st_.get(), OPUS_GET_FINAL_RANGE(&value));
  if (r != OPUS_OK) throw OpusError(r, "OPUS_GET_FINAL_RANGE");
  return value;
}

bool OpusEncoder::in_dtx() const {
  opus_int32 value = 0;
  const int r = opus_encoder_ctl(st_.get(), OPUS_GET_IN_DTX(&value));
  if (r != OPUS_OK) throw OpusError(r, "OPUS_GET_IN_DTX");
  return value != 0;
}

// ---------------------------------------------------------------------------------------------
// Decoder

void OpusDecoder::Deleter::operator()(::OpusDecoder* st) const noexcept {
  opus_decoder_destroy(st);
}

OpusDecoder::OpusDecoder(int sample_rate_hz, int channels)
    : sample_rate_hz_(sample_rate_hz), channels_(channels) {
  check_rate_channels(sample_rate_hz, channels);
  int err = OPUS_OK;
  st_.reset(opus_decoder_create(sample_rate_hz, channels, &err));
  if (err != OPUS_OK || !st_)
    throw OpusError(err != OPUS_OK ? err : OPUS_ALLOC_FAIL, "opus_decoder_create");
}

OpusDecoder::~OpusDecoder() = default;
OpusDecoder::OpusDecoder(OpusDecoder&&) noexcept = default;
OpusDecoder& OpusDecoder::operator=(OpusDecoder&&) noexcept = default;

bool OpusDecoder::gap_samples_valid(int sample_rate_hz, int frame_samples) {
  if (!opus_rate_supported(sample_rate_hz)) return false;
  const int per_2_5ms = sample_rate_hz / 400;
  return frame_samples > 0 && frame_samples % per_2_5ms == 0 &&
         frame_samples <= sample_rate_hz / 1000 * kOpusMaxPacketMs;
}

namespace {

// Shared argument checks of decode(); 0 when the packet may be handed to libopus.
int check_packet(const void* st, const std::uint8_t* packet, std::size_t bytes, const void* out,
                 int frame_samples) {
  if (st == nullptr || out == nullptr || packet == nullptr || bytes == 0 || frame_samples <= 0) {
    return OPUS_BAD_ARG;
  }
  if (bytes > static_cast<std::size_t>(kOpusMaxPacketBytes)) return OPUS_INVALID_PACKET;
  return 0;
}

}  // namespace

int OpusDecoder::decode(const std::uint8_t* packet, std::size_t bytes, float* out,
                        int max_frame_samples) {
  if (const int e = check_packet(st_.get(), packet, bytes, out, max_frame_samples)) return e;
  return opus_decode_float(st_.get(), packet, static_cast<opus_int32>(bytes), out,
                           max_frame_samples, 0);
}

int OpusDecoder::decode(const std::uint8_t* packet, std::size_t bytes, std::int16_t* out,
                        int max_frame_samples) {
  if (const int e = check_packet(st_.get(), packet, bytes, out, max_frame_samples)) return e;
  return opus_decode(st_.get(), packet, static_cast<opus_int32>(bytes), out, max_frame_samples, 0);
}

int OpusDecoder::decode_fec(const std::uint8_t* next_packet, std::size_t bytes, float* out,
                            int frame_samples) {
  if (const int e = check_packet(st_.get(), next_packet, bytes, out, frame_samples)) return e;
  if (!gap_samples_valid(sample_rate_hz_, frame_samples)) return OPUS_BAD_ARG;
  return opus_decode_float(st_.get(), next_packet, static_cast<opus_int32>(bytes), out,
                           frame_samples, 1);
}

int OpusDecoder::decode_fec(const std::uint8_t* next_packet, std::size_t bytes, std::int16_t* out,
                            int frame_samples) {
  if (const int e = check_packet(st_.get(), next_packet, bytes, out, frame_samples)) return e;
  if (!gap_samples_valid(sample_rate_hz_, frame_samples)) return OPUS_BAD_ARG;
  return opus_decode(st_.get(), next_packet, static_cast<opus_int32>(bytes), out, frame_samples, 1);
}

int OpusDecoder::conceal(float* out, int frame_samples) {
  if (!st_ || out == nullptr || !gap_samples_valid(sample_rate_hz_, frame_samples)) {
    return OPUS_BAD_ARG;
  }
  return opus_decode_float(st_.get(), nullptr, 0, out, frame_samples, 0);
}

int OpusDecoder::conceal(std::int16_t* out, int frame_samples) {
  if (!st_ || out == nullptr || !gap_samples_valid(sample_rate_hz_, frame_samples)) {
    return OPUS_BAD_ARG;
  }
  return opus_decode(st_.get(), nullptr, 0, out, frame_samples, 0);
}

void OpusDecoder::reset() {
  const int r = opus_decoder_ctl(st_.get(), OPUS_RESET_STATE);
  if (r != OPUS_OK) throw OpusError(r, "OPUS_RESET_STATE");
}

int OpusDecoder::last_packet_duration_samples() const {
  opus_int32 value = 0;
  const int r = opus_decoder_ctl(st_.get(), OPUS_GET_LAST_PACKET_DURATION(&value));
  if (r != OPUS_OK) throw OpusError(r, "OPUS_GET_LAST_PACKET_DURATION");
  return static_cast<int>(value);
}

std::uint32_t OpusDecoder::final_range() const {
  opus_uint32 value = 0;
  const int r = opus_decoder_ctl(st_.get(), OPUS_GET_FINAL_RANGE(&value));
  if (r != OPUS_OK) throw OpusError(r, "OPUS_GET_FINAL_RANGE");
  return value;
}

int OpusDecoder::packet_samples(const std::uint8_t* packet, std::size_t bytes, int sample_rate_hz) {
  if (packet == nullptr || bytes == 0 || !opus_rate_supported(sample_rate_hz)) return OPUS_BAD_ARG;
  if (bytes > static_cast<std::size_t>(kOpusMaxPacketBytes)) return OPUS_INVALID_PACKET;
  return opus_packet_get_nb_samples(packet, static_cast<opus_int32>(bytes), sample_rate_hz);
}

bool OpusDecoder::packet_has_fec(const std::uint8_t* packet, std::size_t bytes) {
  if (packet == nullptr || bytes == 0 || bytes > static_cast<std::size_t>(kOpusMaxPacketBytes)) {
    return false;
  }
  // TOC (RFC 6716 §3.1): config in the top 5 bits; 0-11 SILK-only, 12-15 hybrid, 16-31
  // CELT-only (no LBRR). Bit 2 is the stereo flag.
  const int config = packet[0] >> 3;
  if (config >= 16) return false;
  const bool stereo = (packet[0] & 0x4) != 0;
  // SILK frames per Opus frame: SILK-only 10/20/40/60 ms give 1/1/2/3; hybrid is always 1.
  int silk_frames = 1;
  if (config < 12) {
    const int duration_code = config & 3;
    silk_frames = duration_code == 2 ? 2 : duration_code == 3 ? 3 : 1;
  }
  const unsigned char* frames[48];
  opus_int16 sizes[48];
  const int count =
      opus_packet_parse(packet, static_cast<opus_int32>(bytes), nullptr, frames, sizes, nullptr);
  if (count <= 0 || sizes[0] <= 0) return false;  // malformed, or DTX (empty frame)
  // The SILK header (RFC 6716 §4.2.3) opens the range-coded frame with equiprobable flags, so
  // they are the leading bits of the first byte, MSB first: one VAD flag per SILK frame, then
  // the LBRR flag, for the mid channel; then the same for the side channel when stereo.
  const unsigned first = frames[0][0];
  const bool mid_lbrr = ((first >> (7 - silk_frames)) & 1u) != 0;
  const bool side_lbrr = stereo && ((first >> (6 - 2 * silk_frames)) & 1u) != 0;
  return mid_lbrr || side_lbrr;
}

}  // namespace rtvoice
