// Streaming polyphase resampler (Kaiser-windowed sinc) between the voice rates 8000, 16000,
// 22050, 24000, 32000, 44100 and 48000 Hz, with passthrough when both rates are equal.
//
// Filter: cutoff at the lower Nyquist frequency, passband to 0.9 x and stopband from 1.1 x the
// lower Nyquist, >= 110 dB stopband (the design reaches ~116 dB), passband ripple < 0.0001 dB.
// Tones inside the 0.9-1.1 transition band may alias or image only into that same band.
// The impulse response spans kZeroCrossings periods of the lower rate on each side, so the
// latency is about kZeroCrossings / min(in, out) seconds: 4.75 ms for pairs with 8000 Hz
// (a linear-phase filter of this quality cannot be shorter), <= 2.4 ms for all other pairs.
//
// Timing contract (exact output counts from the first call): the filter state starts as
// silence, and after a total of n input frames exactly ceil(n * out / in) output frames have been
// produced. Output frame m represents input time (m - latency_frames()) * in / out, i.e. the
// output is the input delayed by latency_frames() output frames, the first latency_frames()
// outputs being the filter's response to the initial silence. A 20 ms chunk therefore always
// yields exactly 20 ms of output (960 frames at 48 kHz), including the first. flush() emits the
// held-back latency_frames() frames and resets the stream.
//
// Determinism: each output is computed by the same arithmetic whatever the chunking, so
// streaming output is bit-identical to one-shot output. (Different CPUs may pick different
// kernels, e.g. FMA or not, which may differ in the last bit between machines.)
//
// Owned by one thread at a time. All memory is allocated in the constructor; process(),
// flush() and reset() never allocate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace rtvoice {

// Auto picks the fastest kernel the CPU supports (AVX2+FMA on x86-64 when present); Portable
// forces the plain C++ kernels that every CPU runs (for tests and comparisons).
enum class ResamplerKernel { Auto, Portable };

class Resampler {
 public:
  // Zero crossings of the lower rate's sinc on each side of the impulse response.
  static constexpr int kZeroCrossings = 38;

  // Throws std::invalid_argument unless both rates are supported and 1 <= channels <= 64.
  Resampler(int in_rate_hz, int out_rate_hz, int channels,
            ResamplerKernel kernel = ResamplerKernel::Auto);
  ~Resampler();
  Resampler(const Resampler&) = delete;
  Resampler& operator=(const Resampler&) = delete;
  Resampler(Resampler&&) noexcept;
  Resampler& operator=(Resampler&&) noexcept;

  static bool is_supported_rate(int rate_hz);

  int in_rate_hz() const;
  int out_rate_hz() const;
  int channels() const;

  // Output frames by which the output lags the input (at the output rate); 0 for passthrough.
  std::size_t latency_frames() const;
  double latency_seconds() const;

  // Frames the next process() call returns when given in_frames input frames.
  std::size_t output_frames(std::size_t in_frames) const;

  // Consumes in_frames interleaved frames and writes exactly output_frames(in_frames) frames to
  // out. Throws std::invalid_argument (before touching any state) if out_capacity is smaller.
  // int16 samples are scaled by 1/32768 on input; outputs are rounded and saturated.
  std::size_t process(const float* in, std::size_t in_frames, float* out, std::size_t out_capacity);
  std::size_t process(const std::int16_t* in, std::size_t in_frames, std::int16_t* out,
                      std::size_t out_capacity);

  // Writes the latency_frames() frames still held back (as if silence followed the input), then
  // resets to the initial state. Throws std::invalid_argument if out_capacity is too small.
  std::size_t flush(float* out, std::size_t out_capacity);
  std::size_t flush(std::int16_t* out, std::size_t out_capacity);

  // Back to the initial state (silent history, counts start again from zero).
  void reset();

  // Design details, for tests and benchmarks.
  std::size_t taps_per_phase() const;  // input frames each output reads (padded)
  std::size_t phases() const;          // L of the reduced ratio out/in = L/M
  const char* kernel_name() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rtvoice
