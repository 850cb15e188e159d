// Fuzzes rtvoice::OpusDecoder with arbitrary packets: decode, decode_fec, conceal and the packet
// inspectors must never crash, never write past the output buffer (ASan), and keep their return
// contracts.
//
// Input: one config byte (rate, channels, sample type), then operations until the input ends:
//   op byte % 5: 0 decode, 1 decode_fec, 2 conceal, 3 reset, 4 inspect only.
//   decode/decode_fec/inspect: a 16-bit length (mod 4096, so oversized packets occur) + payload;
//   decode_fec/conceal: a byte giving frame_samples in 2.5 ms units (0 and > 48 are invalid).
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_input.hpp"
#include "rtvoice/opus_codec.hpp"

namespace {

constexpr std::array<int, 5> kRates = {8000, 12000, 16000, 24000, 48000};

template <typename Sample>
void run(rtvoice::fuzz::Input& in, int rate_hz, int channels) {
  rtvoice::OpusDecoder dec(rate_hz, channels);
  const int max_samples = rate_hz * rtvoice::kOpusMaxPacketMs / 1000;
  // Guard values after the buffer catch writes past max_samples even without ASan.
  constexpr std::size_t kGuard = 64;
  std::vector<Sample> out(static_cast<std::size_t>(max_samples * channels) + kGuard);
  const auto guard_intact = [&] {
    for (std::size_t i = out.size() - kGuard; i < out.size(); ++i) {
      if (out[i] != Sample{}) return false;
    }
    return true;
  };
  const int samples_per_2500us = rate_hz / 400;

  while (!in.empty()) {
    const int op = in.u8() % 5;
    if (op == 3) {
      dec.reset();
      continue;
    }
    std::size_t bytes = 0;
    const std::uint8_t* packet = nullptr;
    if (op != 2) packet = in.bytes(in.u16() % 4096, bytes);
    int frame_samples = 0;
    if (op == 1 || op == 2) frame_samples = in.u8() * samples_per_2500us;

    const int inspected = rtvoice::OpusDecoder::packet_samples(packet, bytes, rate_hz);
    RTVOICE_FUZZ_CHECK(inspected < 0 || inspected <= max_samples);
    const bool has_fec = rtvoice::OpusDecoder::packet_has_fec(packet, bytes);
    if (bytes == 0) RTVOICE_FUZZ_CHECK(!has_fec);

    int n = 0;
    if (op == 0) {
      n = dec.decode(packet, bytes, out.data(), max_samples);
      // A decoded packet is exactly as long as its header says.
      if (n >= 0) RTVOICE_FUZZ_CHECK(n == inspected);
      if (bytes == 0 || bytes > static_cast<std::size_t>(rtvoice::kOpusMaxPacketBytes)) {
        RTVOICE_FUZZ_CHECK(n < 0);
      }
    } else if (op == 1) {
      n = dec.decode_fec(packet, bytes, out.data(), frame_samples);
      if (n >= 0) RTVOICE_FUZZ_CHECK(n == frame_samples);
    } else if (op == 2) {
      n = dec.conceal(out.data(), frame_samples);
      if (n >= 0) RTVOICE_FUZZ_CHECK(n == frame_samples);
    }
    if (op <= 2 && !rtvoice::OpusDecoder::gap_samples_valid(rate_hz, frame_samples) && op != 0) {
      RTVOICE_FUZZ_CHECK(n < 0);
    }
    RTVOICE_FUZZ_CHECK(n <= max_samples);
    RTVOICE_FUZZ_CHECK(guard_intact());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  rtvoice::fuzz::Input in(data, size);
  const std::uint8_t config = in.u8();
  const int rate_hz = kRates[config % kRates.size()];
  const int channels = (config & 0x08) != 0 ? 2 : 1;
  if ((config & 0x10) != 0) {
    run<std::int16_t>(in, rate_hz, channels);
  } else {
    run<float>(in, rate_hz, channels);
  }
  return 0;
}
