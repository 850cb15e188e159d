#include "rtvoice/audio_decoder.hpp"

#include "rtvoice/opus_codec.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace rtvoice {
namespace {

// L16 payloads of at most two bytes are DTX frames of this many milliseconds of silence (the
// JitterBuffer treats every payload of <= 2 bytes as DTX).
constexpr int kL16DtxMs = 20;

class L16Decoder final : public AudioDecoder {
 public:
  L16Decoder(int sample_rate_hz, int channels) : rate_hz_(sample_rate_hz), channels_(channels) {
    if (sample_rate_hz < 8000 || sample_rate_hz > 192000 || sample_rate_hz % 1000 != 0) {
      throw std::invalid_argument("l16: sample_rate must be a multiple of 1000 Hz in 8000..192000");
    }
    if (channels < 1 || channels > 8) throw std::invalid_argument("l16: channels must be 1..8");
  }
  int sample_rate_hz() const override { return rate_hz_; }
  int channels() const override { return channels_; }
  int rtp_clock_hz() const override { return rate_hz_; }
  const char* name() const override { return "l16"; }

  int packet_samples(const std::uint8_t* payload, std::size_t bytes) const override {
    if (payload == nullptr || bytes == 0) return -1;
    if (bytes <= 2) return rate_hz_ / 1000 * kL16DtxMs;
    const std::size_t frame_bytes = 2 * static_cast<std::size_t>(channels_);
    if (bytes % frame_bytes != 0) return -1;
    return static_cast<int>(std::min<std::size_t>(bytes / frame_bytes, 1u << 30));
  }
  bool packet_has_fec(const std::uint8_t*, std::size_t) const override { return false; }

  int decode(const std::uint8_t* payload, std::size_t bytes, float* out, int max_samples) override {
    const int n = packet_samples(payload, bytes);
    if (n < 0 || out == nullptr) return -1;
    if (n > max_samples) return -2;
    const std::size_t values = static_cast<std::size_t>(n) * static_cast<std::size_t>(channels_);
    if (bytes <= 2) {
      std::memset(out, 0, values * sizeof(float));
      return n;
    }
    for (std::size_t i = 0; i < values; ++i) {
      const auto v = static_cast<std::int16_t>(
          static_cast<std::uint16_t>((payload[2 * i] << 8) | payload[2 * i + 1]));
      out[i] = static_cast<float>(v) * (1.0f / 32768.0f);
    }
    return n;
  }
  int decode_fec(const std::uint8_t*, std::size_t, float*, int) override { return -1; }
  int conceal(float* out, int frame_samples) override {
    if (out == nullptr || frame_samples <= 0) return -1;
    std::memset(out, 0, static_cast<std::size_t>(frame_samples * channels_) * sizeof(float));
    return frame_samples;
  }
  void reset() override {}

 private:
  int rate_hz_;
  int channels_;
};

// rtvoice::OpusDecoder behind the AudioDecoder interface. libopus conceals only in multiples of
// 2.5 ms; a gap of another length (possible only with malformed timestamps) is concealed rounded
// up through a scratch buffer.
class OpusAudioDecoder final : public AudioDecoder {
 public:
  OpusAudioDecoder(int sample_rate_hz, int channels)
      : dec_(sample_rate_hz, channels),
        scratch_(static_cast<std::size_t>(sample_rate_hz / 1000 * kOpusMaxPacketMs * channels)) {}

  int sample_rate_hz() const override { return dec_.sample_rate_hz(); }
  int channels() const override { return dec_.channels(); }
  int rtp_clock_hz() const override { return 48000; }
  const char* name() const override { return "opus"; }

  int packet_samples(const std::uint8_t* payload, std::size_t bytes) const override {
    return OpusDecoder::packet_samples(payload, bytes, dec_.sample_rate_hz());
  }
  bool packet_has_fec(const std::uint8_t* payload, std::size_t bytes) const override {
    return OpusDecoder::packet_has_fec(payload, bytes);
  }
  int decode(const std::uint8_t* payload, std::size_t bytes, float* out, int max_samples) override {
    return dec_.decode(payload, bytes, out, max_samples);
  }
  int decode_fec(const std::uint8_t* next, std::size_t bytes, float* out,
                 int frame_samples) override {
    return dec_.decode_fec(next, bytes, out, frame_samples);
  }
  int conceal(float* out, int frame_samples) override {
    if (out == nullptr || frame_samples <= 0) return -1;
    const int rate = dec_.sample_rate_hz();
    const int quantum = rate / 400;
    const int longest = rate / 1000 * kOpusMaxPacketMs;
    const std::size_t ch = static_cast<std::size_t>(dec_.channels());
    int done = 0;
    while (done < frame_samples) {
      const int want = std::min(frame_samples - done, longest);
      float* dst = out + static_cast<std::size_t>(done) * ch;
      if (want % quantum == 0) {
        const int n = dec_.conceal(dst, want);
        if (n != want) return n < 0 ? n : -1;
      } else {
        const int rounded = std::min((want / quantum + 1) * quantum, longest);
        const int n = dec_.conceal(scratch_.data(), rounded);
        if (n < want) return n < 0 ? n : -1;
        std::memcpy(dst, scratch_.data(), static_cast<std::size_t>(want) * ch * sizeof(float));
      }
      done += want;
    }
    return frame_samples;
  }
  void reset() override { dec_.reset(); }

 private:
  OpusDecoder dec_;
  std::vector<float> scratch_;
};

}  // namespace

std::unique_ptr<AudioDecoder> make_l16_decoder(int sample_rate_hz, int channels) {
  return std::make_unique<L16Decoder>(sample_rate_hz, channels);
}

std::unique_ptr<AudioDecoder> make_opus_decoder(int sample_rate_hz, int channels) {
  return std::make_unique<OpusAudioDecoder>(sample_rate_hz, channels);
}

std::unique_ptr<AudioDecoder> make_decoder(const std::string& codec, int sample_rate_hz,
                                           int channels) {
  if (codec == "opus") return make_opus_decoder(sample_rate_hz, channels);
  if (codec == "l16") return make_l16_decoder(sample_rate_hz, channels);
  throw std::invalid_argument("codec must be 'opus' or 'l16', got '" + codec + "'");
}

}  // namespace rtvoice
