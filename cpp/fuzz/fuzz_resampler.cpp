// Fuzzes rtvoice::Resampler with arbitrary rate pairs, channel counts, sample values (any float
// bit pattern, or int16) and chunkings. Contracts checked: unsupported rates are rejected with
// std::invalid_argument; process() writes exactly output_frames(n) frames and the running total
// after n input frames is ceil(n * out / in); a too-small output buffer throws without touching
// the state; flush() writes latency_frames() frames; and the chunked output is bit-identical to a
// one-shot run over the same input.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <vector>

#include "fuzz_input.hpp"
#include "rtvoice/resampler.hpp"

namespace {

constexpr std::array<int, 9> kRates = {8000, 16000, 22050, 24000, 32000, 44100, 48000, 12000, 0};

template <typename Sample>
Sample sample_from(rtvoice::fuzz::Input& in) {
  if constexpr (sizeof(Sample) == 4) {
    const std::uint32_t bits = in.u32();
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  } else {
    return static_cast<Sample>(in.u16());
  }
}

template <typename Sample>
void run(rtvoice::fuzz::Input& in, int in_rate_hz, int out_rate_hz, int channels) {
  std::optional<rtvoice::Resampler> chunked;
  try {
    chunked.emplace(in_rate_hz, out_rate_hz, channels);
  } catch (const std::invalid_argument&) {
    RTVOICE_FUZZ_CHECK(channels == 0 || !rtvoice::Resampler::is_supported_rate(in_rate_hz) ||
                       !rtvoice::Resampler::is_supported_rate(out_rate_hz));
    return;
  }
  const std::size_t ch = static_cast<std::size_t>(channels);
  std::vector<Sample> input;
  std::vector<Sample> streamed;
  std::vector<Sample> out;
  std::uint64_t total_in = 0;

  while (!in.empty() && total_in < 6000) {
    const std::size_t frames = in.u16() % 700;
    const std::size_t start = input.size();
    input.resize(start + frames * ch);
    for (std::size_t i = start; i < input.size(); ++i) input[i] = sample_from<Sample>(in);

    const std::size_t expect = chunked->output_frames(frames);
    if (expect > 0 && (in.u8() & 7) == 0) {  // an output buffer one frame short must be refused
      out.assign((expect - 1) * ch, Sample{});
      bool threw = false;
      try {
        chunked->process(input.data() + start, frames, out.data(), expect - 1);
      } catch (const std::invalid_argument&) {
        threw = true;
      }
      RTVOICE_FUZZ_CHECK(threw);
      RTVOICE_FUZZ_CHECK(chunked->output_frames(frames) == expect);
    }
    out.assign(expect * ch + 1, Sample{});
    const std::size_t n =
        chunked->process(frames == 0 ? nullptr : input.data() + start, frames, out.data(), expect);
    RTVOICE_FUZZ_CHECK(n == expect);
    streamed.insert(streamed.end(), out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n * ch));
    total_in += frames;
    const std::uint64_t in_hz = static_cast<std::uint64_t>(in_rate_hz);
    const std::uint64_t out_hz = static_cast<std::uint64_t>(out_rate_hz);
    RTVOICE_FUZZ_CHECK(streamed.size() / ch == (total_in * out_hz + in_hz - 1) / in_hz);
  }
  const std::size_t latency = chunked->latency_frames();
  out.assign(latency * ch + 1, Sample{});
  RTVOICE_FUZZ_CHECK(chunked->flush(out.data(), latency) == latency);
  streamed.insert(streamed.end(), out.begin(),
                  out.begin() + static_cast<std::ptrdiff_t>(latency * ch));

  // One shot over the whole input must give the same bits.
  rtvoice::Resampler once(in_rate_hz, out_rate_hz, channels);
  const std::size_t frames = input.size() / ch;
  std::vector<Sample> whole((once.output_frames(frames) + once.latency_frames()) * ch + 1);
  std::size_t n =
      once.process(frames == 0 ? nullptr : input.data(), frames, whole.data(), whole.size() / ch);
  n += once.flush(whole.data() + n * ch, whole.size() / ch - n);
  RTVOICE_FUZZ_CHECK(n * ch == streamed.size());
  RTVOICE_FUZZ_CHECK(n == 0 ||
                     std::memcmp(whole.data(), streamed.data(), n * ch * sizeof(Sample)) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  rtvoice::fuzz::Input in(data, size);
  const std::uint8_t rates = in.u8();
  const int in_rate_hz = kRates[(rates & 0x0f) % kRates.size()];
  const int out_rate_hz = kRates[(rates >> 4) % kRates.size()];
  const std::uint8_t config = in.u8();
  const int channels = config % 5;  // 0 is invalid
  if ((config & 0x80) != 0) {
    run<std::int16_t>(in, in_rate_hz, out_rate_hz, channels);
  } else {
    run<float>(in, in_rate_hz, out_rate_hz, channels);
  }
  return 0;
}
