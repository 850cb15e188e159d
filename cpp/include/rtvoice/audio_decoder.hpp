// The decoder abstraction the JitterBuffer plays through (NetEq's AudioDecoder in small).
//
// A decoder turns one RTP payload into PCM, recovers a lost frame from the next payload's
// redundancy (FEC) when the codec has any, and conceals a gap when it has nothing. All audio is
// interleaved float32; "samples" counts samples per channel. Implementations are owned by one
// thread (the JitterBuffer's), never allocate after construction and never throw from the
// per-frame calls: they return a negative code instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace rtvoice {

class AudioDecoder {
 public:
  virtual ~AudioDecoder() = default;

  virtual int sample_rate_hz() const = 0;
  virtual int channels() const = 0;
  // Units of the RTP timestamp per second (48000 for Opus whatever the decode rate).
  virtual int rtp_clock_hz() const = 0;
  // Short lowercase name, e.g. "opus".
  virtual const char* name() const = 0;

  // Duration of the payload in samples at sample_rate_hz(), or a negative value when the payload
  // is not valid for this codec. Reads the header only; cheap enough for insert().
  virtual int packet_samples(const std::uint8_t* payload, std::size_t bytes) const = 0;
  // True when decode_fec(payload) recovers the frame before it from redundancy.
  virtual bool packet_has_fec(const std::uint8_t* payload, std::size_t bytes) const = 0;

  // Decodes one payload into out (room for max_samples samples per channel). Returns the
  // samples per channel written, or a negative code.
  virtual int decode(const std::uint8_t* payload, std::size_t bytes, float* out,
                     int max_samples) = 0;
  // Writes frame_samples samples recovered from the redundancy in next_payload for the audio
  // just before it. Returns frame_samples, or a negative code (nothing usable written).
  virtual int decode_fec(const std::uint8_t* next_payload, std::size_t bytes, float* out,
                         int frame_samples) = 0;
  // Writes exactly frame_samples samples of concealment continuing the last output (after a
  // comfort-noise payload this is comfort noise). Returns frame_samples or a negative code.
  virtual int conceal(float* out, int frame_samples) = 0;
  // Forgets the decoding history, as for a new stream.
  virtual void reset() = 0;
};

// Linear PCM (RFC 3551 L16: big-endian int16, interleaved, RTP clock = sample rate). It has no
// redundancy; concealment is silence. Payloads of an odd byte count or of a length that is not
// a whole number of sample frames are invalid. Useful as a transparent codec in tests, where
// decoded samples equal the sent samples exactly.
std::unique_ptr<AudioDecoder> make_l16_decoder(int sample_rate_hz, int channels);

// rtvoice::OpusDecoder (RTP clock 48 kHz): in-band FEC (LBRR) through decode_fec, libopus PLC
// and comfort noise after DTX through conceal. sample_rate_hz: 8000, 12000, 16000, 24000 or
// 48000; channels 1 or 2. Throws std::invalid_argument or OpusError.
std::unique_ptr<AudioDecoder> make_opus_decoder(int sample_rate_hz, int channels);

// make_l16_decoder or make_opus_decoder by name ("l16", "opus"); throws std::invalid_argument
// for any other name.
std::unique_ptr<AudioDecoder> make_decoder(const std::string& codec, int sample_rate_hz,
                                           int channels);

}  // namespace rtvoice
