#include "rtvoice/resampler.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define RTVOICE_RESAMPLER_X86 1
#endif

namespace rtvoice {
namespace {

constexpr int kSupportedRates[] = {8000, 16000, 22050, 24000, 32000, 44100, 48000};
constexpr int kMaxChannels = 64;
// Kaiser beta for ~116 dB stopband with kZeroCrossings = 38 (cutoff at the lower Nyquist).
constexpr double kKaiserBeta = 11.9;
// Taps per phase are padded with leading zeros to a multiple of this (one AVX vector).
constexpr std::size_t kTapAlign = 8;
// Input frames appended per pass over the internal buffer.
constexpr std::size_t kBlockFrames = 2048;
// Outputs computed together by one dot-product kernel call (general ratios).
constexpr std::size_t kBatch = 4;
// Outputs computed together by one convolution kernel pass (integer ratios), and the most
// outputs per sub-block of an integer-ratio emit.
constexpr std::size_t kConvOutputs = 64;
constexpr std::size_t kSubBlock = 256;
// Frames past the end of the buffer that the convolution kernels may read (and ignore).
constexpr std::size_t kSlackFrames = 512;
constexpr std::size_t kAlignBytes = 64;

struct AlignedFree {
  void operator()(float* p) const { ::operator delete[](p, std::align_val_t(kAlignBytes)); }
};
using AlignedFloats = std::unique_ptr<float[], AlignedFree>;

AlignedFloats aligned_zeros(std::size_t count) {
  auto* p =
      static_cast<float*>(::operator new[](count * sizeof(float), std::align_val_t(kAlignBytes)));
  std::fill(p, p + count, 0.0f);
  return AlignedFloats(p);
}

double bessel_i0(double x) {
  const double q = x * x / 4.0;
  double term = 1.0;
  double sum = 1.0;
  for (int k = 1; k < 500; ++k) {
    term *= q / (static_cast<double>(k) * k);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return sum;
}

// kBatch dot products of `taps` floats (a multiple of kTapAlign) between coefs[b] (64-byte
// aligned) and windows[b]. Every output goes through the same instruction sequence whichever
// batch slot it occupies, which is what makes streaming bit-identical to one-shot.
using DotBatchFn = void (*)(const float* const* coefs, const float* const* windows,
                            std::size_t taps, float* results);

void dot_batch_generic(const float* const* coefs, const float* const* windows, std::size_t taps,
                       float* results) {
  for (std::size_t b = 0; b < kBatch; ++b) {
    const float* c = coefs[b];
    const float* x = windows[b];
    float acc[8] = {};
    for (std::size_t j = 0; j < taps; j += 8) {
      for (std::size_t l = 0; l < 8; ++l) acc[l] += c[j + l] * x[j + l];
    }
    results[b] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  }
}

// y[m] = sum over s < nstreams, then q < lens[s], of coefs[s][q] * streams[s][m + q], for
// m < nout (a multiple of kConvOutputs). Each output accumulates in exactly that (s, q) order
// in its own lane, so its value does not depend on its neighbours or on the block it is in.
using ConvFn = void (*)(const float* const* streams, const float* const* coefs,
                        const std::size_t* lens, std::size_t nstreams, std::size_t nout, float* y);

void conv_generic(const float* const* streams, const float* const* coefs, const std::size_t* lens,
                  std::size_t nstreams, std::size_t nout, float* y) {
  for (std::size_t m = 0; m < nout; m += kConvOutputs) {
    float acc[kConvOutputs] = {};
    for (std::size_t s = 0; s < nstreams; ++s) {
      const float* x = streams[s] + m;
      const float* c = coefs[s];
      for (std::size_t q = 0; q < lens[s]; ++q) {
        const float cq = c[q];
        for (std::size_t r = 0; r < kConvOutputs; ++r) acc[r] += cq * x[q + r];
      }
    }
    std::memcpy(y + m, acc, sizeof(acc));
  }
}

#ifdef RTVOICE_RESAMPLER_X86
__attribute__((target("avx2,fma"))) void conv_avx2(const float* const* streams,
                                                   const float* const* coefs,
                                                   const std::size_t* lens, std::size_t nstreams,
                                                   std::size_t nout, float* y) {
  static_assert(kConvOutputs == 64, "eight AVX accumulators");
  for (std::size_t m = 0; m < nout; m += kConvOutputs) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps(), a4 = _mm256_setzero_ps(), a5 = _mm256_setzero_ps(),
           a6 = _mm256_setzero_ps(), a7 = _mm256_setzero_ps();
    for (std::size_t s = 0; s < nstreams; ++s) {
      const float* x = streams[s] + m;
      const float* c = coefs[s];
      const std::size_t len = lens[s];
      for (std::size_t q = 0; q < len; ++q) {
        const __m256 b = _mm256_broadcast_ss(c + q);
        const float* xq = x + q;
        a0 = _mm256_fmadd_ps(b, _mm256_loadu_ps(xq), a0);
        a1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(xq + 8), a1);
        a2 = _mm256_fmadd_ps(b, _mm256_loadu_ps(xq + 16), a2);
        a3 = _mm256_fmadd_ps(b, _mm256_loadu_ps(xq + 24), a3);
        a4 = _mm256_fmadd_ps(b, _mm256_loadu_ps(xq + 32), a4);
        a5 = _mm256_fmadd_ps(b, _mm256_loadu_ps(xq + 40), a5);
        a6 = _mm256_fmadd_ps(b, _mm256_loadu_ps(xq + 48), a6);
        a7 = _mm256_fmadd_ps(b, _mm256_loadu_ps(xq + 56), a7);
      }
    }
    float* ym = y + m;
    _mm256_storeu_ps(ym, a0);
    _mm256_storeu_ps(ym + 8, a1);
    _mm256_storeu_ps(ym + 16, a2);
    _mm256_storeu_ps(ym + 24, a3);
    _mm256_storeu_ps(ym + 32, a4);
    _mm256_storeu_ps(ym + 40, a5);
    _mm256_storeu_ps(ym + 48, a6);
    _mm256_storeu_ps(ym + 56, a7);
  }
}

__attribute__((target("avx2,fma"))) void dot_batch_avx2(const float* const* coefs,
                                                        const float* const* windows,
                                                        std::size_t taps, float* results) {
  const float* c0 = coefs[0];
  const float* c1 = coefs[1];
  const float* c2 = coefs[2];
  const float* c3 = coefs[3];
  const float* x0 = windows[0];
  const float* x1 = windows[1];
  const float* x2 = windows[2];
  const float* x3 = windows[3];
  __m256 a0 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps();
  __m256 a1 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
  __m256 a2 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps();
  __m256 a3 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
  std::size_t j = 0;
  for (; j + 16 <= taps; j += 16) {
    a0 = _mm256_fmadd_ps(_mm256_load_ps(c0 + j), _mm256_loadu_ps(x0 + j), a0);
    b0 = _mm256_fmadd_ps(_mm256_load_ps(c0 + j + 8), _mm256_loadu_ps(x0 + j + 8), b0);
    a1 = _mm256_fmadd_ps(_mm256_load_ps(c1 + j), _mm256_loadu_ps(x1 + j), a1);
    b1 = _mm256_fmadd_ps(_mm256_load_ps(c1 + j + 8), _mm256_loadu_ps(x1 + j + 8), b1);
    a2 = _mm256_fmadd_ps(_mm256_load_ps(c2 + j), _mm256_loadu_ps(x2 + j), a2);
    b2 = _mm256_fmadd_ps(_mm256_load_ps(c2 + j + 8), _mm256_loadu_ps(x2 + j + 8), b2);
    a3 = _mm256_fmadd_ps(_mm256_load_ps(c3 + j), _mm256_loadu_ps(x3 + j), a3);
    b3 = _mm256_fmadd_ps(_mm256_load_ps(c3 + j + 8), _mm256_loadu_ps(x3 + j + 8), b3);
  }
  if (j < taps) {  // taps is a multiple of 8
    a0 = _mm256_fmadd_ps(_mm256_load_ps(c0 + j), _mm256_loadu_ps(x0 + j), a0);
    a1 = _mm256_fmadd_ps(_mm256_load_ps(c1 + j), _mm256_loadu_ps(x1 + j), a1);
    a2 = _mm256_fmadd_ps(_mm256_load_ps(c2 + j), _mm256_loadu_ps(x2 + j), a2);
    a3 = _mm256_fmadd_ps(_mm256_load_ps(c3 + j), _mm256_loadu_ps(x3 + j), a3);
  }
  const __m256 s01 = _mm256_hadd_ps(_mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1));
  const __m256 s23 = _mm256_hadd_ps(_mm256_add_ps(a2, b2), _mm256_add_ps(a3, b3));
  const __m256 s = _mm256_hadd_ps(s01, s23);
  _mm_storeu_ps(results, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
}

bool cpu_has_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

inline float to_float(float v) { return v; }
inline float to_float(std::int16_t v) { return static_cast<float>(v) * (1.0f / 32768.0f); }

inline void store(float* dst, float v) { *dst = v; }
inline void store(std::int16_t* dst, float v) {
  const float s = std::min(std::max(v * 32768.0f, -32768.0f), 32767.0f);
  *dst = static_cast<std::int16_t>(std::lrint(s));
}

}  // namespace

struct Resampler::Impl {
  // Integer upsampling and integer decimation use the convolution kernel (vectorised across
  // outputs); other ratios use the dot-product kernel (vectorised across taps).
  enum class Mode { Passthrough, Upsample, Decimate, General };

  int in_rate_hz = 0;
  int out_rate_hz = 0;
  int channels = 1;
  Mode mode = Mode::General;
  std::size_t L = 1;  // out / in = L / M, reduced
  std::size_t M = 1;
  std::size_t latency = 0;  // output frames
  std::size_t taps = 0;     // input frames each output reads, padded

  AlignedFloats coefs;                      // L phases x taps, each phase's taps time-reversed
  std::vector<std::uint32_t> phase_of_u;    // cycle position u -> phase (u * M mod L)
  std::vector<std::uint32_t> advance_of_u;  // input frames between output u and u + 1

  // Integer ratios: sub-filters with their zero taps trimmed. Upsample: one per phase, starting
  // sub_begin[p] taps into the phase's window. Decimate: one per input residue r (taps r, r + M,
  // ...), starting sub_begin[r] steps of M into the window.
  AlignedFloats sub_coefs;
  std::vector<std::size_t> sub_offset;
  std::vector<std::size_t> sub_begin;
  std::vector<std::size_t> sub_len;
  std::vector<std::ptrdiff_t> trivial;  // Upsample: window offset of a lone unit tap, or -1
  std::size_t sub_span = 0;             // Decimate: longest sub_begin + sub_len
  AlignedFloats streams;                // Decimate: the input split into M residues
  std::size_t stream_stride = 0;

  AlignedFloats scratch;  // kernel outputs before they are interleaved and converted
  std::size_t scratch_frames = 0;

  AlignedFloats buf;  // planar: channel c at c * buf_stride
  std::size_t buf_cap = 0;
  std::size_t buf_stride = 0;
  std::size_t filled = 0;    // valid frames in buf
  std::size_t next_i0 = 0;   // buffer index of the newest input frame the next output reads
  std::size_t u = 0;         // position of the next output in the L-output cycle
  std::size_t in_mod_m = 0;  // total input frames mod M

  DotBatchFn dot = dot_batch_generic;
  ConvFn conv = conv_generic;
  const char* kernel = "portable";

  void design();
  void reset_state();
  std::size_t output_frames(std::size_t in_frames) const;
  void compact();
  template <typename T>
  void append(const T* in, std::size_t frames);
  template <typename T>
  std::size_t emit(T* out, std::size_t limit);
  template <typename T>
  std::size_t emit_upsample(T* out, std::size_t limit);
  template <typename T>
  std::size_t emit_decimate(T* out, std::size_t limit);
  template <typename T>
  std::size_t emit_general(T* out, std::size_t limit);
  template <typename T>
  std::size_t process(const T* in, std::size_t in_frames, T* out, std::size_t out_capacity);
  template <typename T>
  std::size_t flush(T* out, std::size_t out_capacity);
};

void Resampler::Impl::design() {
  const int g = std::gcd(in_rate_hz, out_rate_hz);
  L = static_cast<std::size_t>(out_rate_hz / g);
  M = static_cast<std::size_t>(in_rate_hz / g);
  if (in_rate_hz == out_rate_hz) {
    mode = Mode::Passthrough;
    return;
  }
  mode = M == 1 ? Mode::Upsample : L == 1 ? Mode::Decimate : Mode::General;
  // The filter runs at the virtual rate L * in = M * out; R virtual samples make one period of
  // the lower rate, whose Nyquist frequency is the cutoff.
  const std::size_t R = in_rate_hz < out_rate_hz ? L : M;
  const std::size_t half_width = static_cast<std::size_t>(kZeroCrossings) * R;
  // Centre on a multiple of M so that the delay is a whole number of output frames.
  const std::size_t centre = M * ((half_width + M - 1) / M);
  const std::size_t length = centre + half_width + 1;
  const std::size_t k_taps = (length + L - 1) / L;
  taps = (k_taps + kTapAlign - 1) / kTapAlign * kTapAlign;
  latency = centre / M;

  std::vector<double> h(k_taps * L, 0.0);
  const double i0_beta = bessel_i0(kKaiserBeta);
  const double pi = 3.14159265358979323846;
  for (std::size_t k = centre - half_width; k < length; ++k) {
    const long long x = static_cast<long long>(k) - static_cast<long long>(centre);
    double sinc;
    if (x % static_cast<long long>(R) == 0) {
      sinc = x == 0 ? 1.0 : 0.0;  // exact zeros keep integer-ratio phases exactly trivial
    } else {
      const double a = pi * static_cast<double>(x) / static_cast<double>(R);
      sinc = std::sin(a) / a;
    }
    const double t = static_cast<double>(x) / static_cast<double>(half_width);
    const double w = bessel_i0(kKaiserBeta * std::sqrt(std::max(0.0, 1.0 - t * t))) / i0_beta;
    h[k] = sinc * w;
  }

  coefs = aligned_zeros(L * taps);
  for (std::size_t p = 0; p < L; ++p) {
    double sum = 0.0;
    for (std::size_t j = 0; j < k_taps; ++j) sum += h[p + j * L];
    // Unit DC gain in every phase: no images of DC or low frequencies from phase mismatch.
    const double scale = 1.0 / sum;
    float* c = coefs.get() + p * taps;
    for (std::size_t j = 0; j < k_taps; ++j) {
      c[taps - 1 - j] = static_cast<float>(h[p + j * L] * scale);
    }
  }

  phase_of_u.resize(L);
  advance_of_u.resize(L);
  for (std::size_t v = 0; v < L; ++v) {
    phase_of_u[v] = static_cast<std::uint32_t>(v * M % L);
    advance_of_u[v] = static_cast<std::uint32_t>((v + 1) * M / L - v * M / L);
  }

  // Sub-filters of the integer ratios, zero taps trimmed from both ends.
  const std::size_t n_sub = mode == Mode::Upsample ? L : mode == Mode::Decimate ? M : 0;
  const std::size_t sub_stride = mode == Mode::Upsample ? 1 : M;
  const std::size_t sub_taps = mode == Mode::Upsample ? taps : (taps + M - 1) / M;
  sub_offset.assign(n_sub, 0);
  sub_begin.assign(n_sub, 0);
  sub_len.assign(n_sub, 0);
  trivial.assign(n_sub, -1);
  sub_coefs = aligned_zeros(n_sub * sub_taps + 1);
  for (std::size_t s = 0; s < n_sub; ++s) {
    // Upsample: sub-filter s is phase s. Decimate: the taps r, r + M, ... of the single phase.
    const float* phase = coefs.get() + (mode == Mode::Upsample ? s * taps : 0);
    const std::size_t first = mode == Mode::Upsample ? 0 : s;
    auto tap = [&](std::size_t q) {
      const std::size_t k = first + q * sub_stride;
      return k < taps ? phase[k] : 0.0f;
    };
    std::size_t begin = 0;
    std::size_t end = sub_taps;
    while (begin < end && tap(begin) == 0.0f) ++begin;
    while (end > begin && tap(end - 1) == 0.0f) --end;
    sub_offset[s] = s * sub_taps;
    sub_begin[s] = begin;
    sub_len[s] = end - begin;
    for (std::size_t q = begin; q < end; ++q) sub_coefs[s * sub_taps + q - begin] = tap(q);
    if (mode == Mode::Upsample && end - begin == 1 && tap(begin) == 1.0f) {
      trivial[s] = static_cast<std::ptrdiff_t>(begin);
    }
    sub_span = std::max(sub_span, end);
  }

  buf_cap = taps - 1 + kBlockFrames;
  buf_stride = buf_cap + kSlackFrames;
  buf = aligned_zeros(buf_stride * static_cast<std::size_t>(channels));
  if (mode == Mode::Decimate) {
    stream_stride = kSubBlock + kConvOutputs + sub_span + 8;
    streams = aligned_zeros(M * stream_stride);
    scratch_frames = kSubBlock + kConvOutputs;
  } else if (mode == Mode::Upsample) {
    scratch_frames = kSubBlock + kConvOutputs;
  } else {
    // Every output computable from one buffer fill, plus a partial batch.
    scratch_frames = (buf_cap * L + M - 1) / M + kBatch + 1;
  }
  scratch = aligned_zeros(scratch_frames);
}

void Resampler::Impl::reset_state() {
  in_mod_m = 0;
  if (mode == Mode::Passthrough) return;
  std::fill(buf.get(), buf.get() + buf_stride * static_cast<std::size_t>(channels), 0.0f);
  filled = taps - 1;  // silent history
  next_i0 = taps - 1;
  u = 0;
}

std::size_t Resampler::Impl::output_frames(std::size_t in_frames) const {
  // ceil((r + n) L / M) - ceil(r L / M) with r = total input mod M, free of overflow.
  const std::size_t q = in_frames / M;
  const std::size_t s = in_frames % M;
  const std::size_t r = in_mod_m;
  return q * L + ((r + s) * L + M - 1) / M - (r * L + M - 1) / M;
}

void Resampler::Impl::compact() {
  // Keep the window of the next output: at most taps - 1 frames.
  const std::size_t keep_from = next_i0 + 1 - taps;
  if (keep_from == 0) return;
  const std::size_t keep = filled > keep_from ? filled - keep_from : 0;
  for (int c = 0; c < channels; ++c) {
    float* chan = buf.get() + static_cast<std::size_t>(c) * buf_stride;
    std::memmove(chan, chan + keep_from, keep * sizeof(float));
  }
  filled = keep;
  next_i0 -= keep_from;
}

template <typename T>
void Resampler::Impl::append(const T* in, std::size_t frames) {
  const std::size_t ch = static_cast<std::size_t>(channels);
  for (std::size_t c = 0; c < ch; ++c) {
    float* dst = buf.get() + c * buf_stride + filled;
    if (in == nullptr) {
      std::fill(dst, dst + frames, 0.0f);
    } else if (ch == 1) {
      for (std::size_t i = 0; i < frames; ++i) dst[i] = to_float(in[i]);
    } else {
      for (std::size_t i = 0; i < frames; ++i) dst[i] = to_float(in[i * ch + c]);
    }
  }
  filled += frames;
}

template <typename T>
std::size_t Resampler::Impl::emit(T* out, std::size_t limit) {
  switch (mode) {
    case Mode::Upsample:
      return emit_upsample(out, limit);
    case Mode::Decimate:
      return emit_decimate(out, limit);
    default:
      return emit_general(out, limit);
  }
}

// M == 1: every input frame i yields the L outputs i * L + p, p = 0 .. L - 1, phase p reading
// the window ending at i. Outputs are only ever requested in whole groups of L.
template <typename T>
std::size_t Resampler::Impl::emit_upsample(T* out, std::size_t limit) {
  const std::size_t inputs = std::min(filled > next_i0 ? filled - next_i0 : 0, limit / L);
  const std::size_t ch = static_cast<std::size_t>(channels);
  float* y = scratch.get();
  for (std::size_t c = 0; c < ch; ++c) {
    const float* chan = buf.get() + c * buf_stride;
    for (std::size_t done = 0; done < inputs; done += kSubBlock) {
      const std::size_t nb = std::min(kSubBlock, inputs - done);
      const std::size_t npad = (nb + kConvOutputs - 1) / kConvOutputs * kConvOutputs;
      const float* window = chan + next_i0 + done + 1 - taps;  // window of the first input
      T* dst = out + done * L * ch + c;
      for (std::size_t p = 0; p < L; ++p) {
        if (trivial[p] >= 0) {
          const float* src = window + trivial[p];
          for (std::size_t i = 0; i < nb; ++i) store(dst + (i * L + p) * ch, src[i]);
          continue;
        }
        const float* stream = window + sub_begin[p];
        const float* coef = sub_coefs.get() + sub_offset[p];
        conv(&stream, &coef, &sub_len[p], 1, npad, y);
        for (std::size_t i = 0; i < nb; ++i) store(dst + (i * L + p) * ch, y[i]);
      }
    }
  }
  next_i0 += inputs;
  return inputs * L;
}

// L == 1: output m reads the window ending at next_i0 + m * M. Split into M residue streams
// z_r[t] = x[start + t * M + r], output m is sum_r sum_q c[q * M + r] * z_r[m + q].
template <typename T>
std::size_t Resampler::Impl::emit_decimate(T* out, std::size_t limit) {
  std::size_t n = filled > next_i0 ? (filled - next_i0 + M - 1) / M : 0;
  n = std::min(n, limit);
  const std::size_t ch = static_cast<std::size_t>(channels);
  const float* stream_ptrs[16];
  const float* coef_ptrs[16];
  std::size_t lens[16];
  float* y = scratch.get();
  for (std::size_t c = 0; c < ch; ++c) {
    const float* chan = buf.get() + c * buf_stride;
    for (std::size_t done = 0; done < n; done += kSubBlock) {
      const std::size_t nb = std::min(kSubBlock, n - done);
      const std::size_t npad = (nb + kConvOutputs - 1) / kConvOutputs * kConvOutputs;
      const float* start = chan + next_i0 + done * M + 1 - taps;
      const std::size_t span = npad + sub_span;
      std::size_t used = 0;
      for (std::size_t r = 0; r < M; ++r) {
        if (sub_len[r] == 0) continue;
        float* z = streams.get() + r * stream_stride;
        const float* src = start + r;
        for (std::size_t t = 0; t < span; ++t) z[t] = src[t * M];
        stream_ptrs[used] = z + sub_begin[r];
        coef_ptrs[used] = sub_coefs.get() + sub_offset[r];
        lens[used] = sub_len[r];
        ++used;
      }
      conv(stream_ptrs, coef_ptrs, lens, used, npad, y);
      T* dst = out + done * ch + c;
      for (std::size_t i = 0; i < nb; ++i) store(dst + i * ch, y[i]);
    }
  }
  next_i0 += n * M;
  return n;
}

template <typename T>
std::size_t Resampler::Impl::emit_general(T* out, std::size_t limit) {
  std::size_t n = 0;
  {
    std::size_t i0 = next_i0;
    std::size_t v = u;
    while (n < limit && i0 < filled) {
      ++n;
      i0 += advance_of_u[v];
      if (++v == L) v = 0;
    }
  }
  if (n == 0) return 0;
  const std::size_t ch = static_cast<std::size_t>(channels);
  const float* cs[kBatch];
  const float* xs[kBatch];
  float* y = scratch.get();
  std::size_t i0 = 0;
  std::size_t v = 0;
  for (std::size_t c = 0; c < ch; ++c) {
    const float* window = buf.get() + c * buf_stride + 1 - taps;
    i0 = next_i0;
    v = u;
    std::size_t i = 0;
    for (; i < n; i += kBatch) {
      const std::size_t nb = std::min(kBatch, n - i);
      for (std::size_t b = 0; b < nb; ++b) {
        cs[b] = coefs.get() + phase_of_u[v] * taps;
        xs[b] = window + i0;
        i0 += advance_of_u[v];
        if (++v == L) v = 0;
      }
      for (std::size_t b = nb; b < kBatch; ++b) {  // a partial batch repeats its last output
        cs[b] = cs[nb - 1];
        xs[b] = xs[nb - 1];
      }
      dot(cs, xs, taps, y + i);
    }
    T* dst = out + c;
    for (std::size_t k = 0; k < n; ++k) store(dst + k * ch, y[k]);
  }
  next_i0 = i0;
  u = v;
  return n;
}

template <typename T>
std::size_t Resampler::Impl::process(const T* in, std::size_t in_frames, T* out,
                                     std::size_t out_capacity) {
  const std::size_t count = output_frames(in_frames);
  if (out_capacity < count) {
    throw std::invalid_argument("output capacity " + std::to_string(out_capacity) +
                                " frames is too small: this call produces " +
                                std::to_string(count) + " frames");
  }
  const std::size_t ch = static_cast<std::size_t>(channels);
  if (mode == Mode::Passthrough) {
    for (std::size_t i = 0; i < in_frames * ch; ++i) store(out + i, to_float(in[i]));
    return in_frames;
  }
  std::size_t produced = 0;
  std::size_t remaining = in_frames;
  while (remaining != 0) {
    if (buf_cap - filled < std::min(remaining, kBlockFrames)) compact();
    const std::size_t take = std::min(remaining, buf_cap - filled);
    append(in, take);
    in += take * ch;
    remaining -= take;
    produced += emit(out + produced * ch, count - produced);
  }
  in_mod_m = (in_mod_m + in_frames % M) % M;
  return produced;
}

template <typename T>
std::size_t Resampler::Impl::flush(T* out, std::size_t out_capacity) {
  const std::size_t count = mode == Mode::Passthrough ? 0 : latency;
  if (out_capacity < count) {
    throw std::invalid_argument("output capacity " + std::to_string(out_capacity) +
                                " frames is too small: flush produces " + std::to_string(count) +
                                " frames");
  }
  const std::size_t ch = static_cast<std::size_t>(channels);
  std::size_t produced = 0;
  while (produced < count) {
    if (buf_cap - filled < kBlockFrames) compact();
    append(static_cast<const T*>(nullptr), buf_cap - filled);
    produced += emit(out + produced * ch, count - produced);
  }
  reset_state();
  return produced;
}

Resampler::Resampler(int in_rate_hz, int out_rate_hz, int channels, ResamplerKernel kernel)
    : impl_(std::make_unique<Impl>()) {
  if (!is_supported_rate(in_rate_hz) || !is_supported_rate(out_rate_hz)) {
    throw std::invalid_argument(
        "unsupported rate pair " + std::to_string(in_rate_hz) + " -> " +
        std::to_string(out_rate_hz) +
        " Hz; supported rates are 8000, 16000, 22050, 24000, 32000, 44100 and 48000 Hz");
  }
  if (channels < 1 || channels > kMaxChannels) {
    throw std::invalid_argument("channels must be between 1 and " + std::to_string(kMaxChannels) +
                                ", got " + std::to_string(channels));
  }
  Impl& s = *impl_;
  s.in_rate_hz = in_rate_hz;
  s.out_rate_hz = out_rate_hz;
  s.channels = channels;
  s.design();
  (void)kernel;  // only x86 has a choice to make
#ifdef RTVOICE_RESAMPLER_X86
  if (kernel == ResamplerKernel::Auto && cpu_has_avx2_fma()) {
    s.dot = dot_batch_avx2;
    s.conv = conv_avx2;
    s.kernel = "avx2+fma";
  }
#endif
  if (s.mode == Impl::Mode::Passthrough) s.kernel = "passthrough";
  s.reset_state();
}

Resampler::~Resampler() = default;
Resampler::Resampler(Resampler&&) noexcept = default;
Resampler& Resampler::operator=(Resampler&&) noexcept = default;

bool Resampler::is_supported_rate(int rate_hz) {
  return std::find(std::begin(kSupportedRates), std::end(kSupportedRates), rate_hz) !=
         std::end(kSupportedRates);
}

int Resampler::in_rate_hz() const { return impl_->in_rate_hz; }
int Resampler::out_rate_hz() const { return impl_->out_rate_hz; }
int Resampler::channels() const { return impl_->channels; }
std::size_t Resampler::latency_frames() const { return impl_->latency; }
double Resampler::latency_seconds() const {
  return static_cast<double>(latency_frames()) / impl_->out_rate_hz;
}
std::size_t Resampler::output_frames(std::size_t in_frames) const {
  return impl_->output_frames(in_frames);
}
std::size_t Resampler::taps_per_phase() const { return impl_->taps; }
std::size_t Resampler::phases() const { return impl_->L; }
const char* Resampler::kernel_name() const { return impl_->kernel; }

std::size_t Resampler::process(const float* in, std::size_t in_frames, float* out,
                               std::size_t out_capacity) {
  return impl_->process(in, in_frames, out, out_capacity);
}
std::size_t Resampler::process(const std::int16_t* in, std::size_t in_frames, std::int16_t* out,
                               std::size_t out_capacity) {
  return impl_->process(in, in_frames, out, out_capacity);
}
std::size_t Resampler::flush(float* out, std::size_t out_capacity) {
  return impl_->flush(out, out_capacity);
}
std::size_t Resampler::flush(std::int16_t* out, std::size_t out_capacity) {
  return impl_->flush(out, out_capacity);
}
void Resampler::reset() { impl_->reset_state(); }

}  // namespace rtvoice
