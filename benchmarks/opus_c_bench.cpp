// Reference timing of libopus called directly from C++, for the binding-overhead comparison in
// benchmarks/compare_opus.py (which builds and runs this). Same settings and frames as the
// Python side: 48 kHz mono, 20 ms frames, VOIP, 32 kb/s, complexity 9, in-band FEC, 10 %
// expected loss.
//
//   opus_c_bench PCM_F32_FILE PACKETS_OUT_FILE ENCODE_REPEATS DECODE_REPEATS
//
// PCM_F32_FILE holds native-endian float32 mono samples. Each repeat runs the whole sequence on
// a reset codec and times every call on its own (steady clock); for each frame the fastest of
// the repeats is kept, which filters out preemption on a shared machine. Printed, one line per
// operation: "name ns_frame0 ns_frame1 ...", minus the cost of reading the clock ("timer_ns").
// The packets are written to PACKETS_OUT_FILE (2-byte little-endian length, then the packet) so
// the caller can check that both sides did identical work.
#include <opus.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <vector>

namespace {

constexpr int kRateHz = 48000;
constexpr int kFrameSamples = 960;
constexpr int kMaxPacketBytes = 4000;

using Clock = std::chrono::steady_clock;

std::int64_t ns_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
}

void check(int code, const char* what) {
  if (code < 0) {
    std::fprintf(stderr, "%s: %s\n", what, opus_strerror(code));
    std::exit(1);
  }
}

// Calls reset() then call(f) for every frame, `repeats` times; returns each frame's fastest
// call in ns.
template <typename Reset, typename Call>
std::vector<std::int64_t> per_frame_min_ns(int repeats, std::size_t frames, Reset&& reset,
                                           Call&& call) {
  std::vector<std::int64_t> best(frames, INT64_MAX);
  for (int r = 0; r < repeats; ++r) {
    reset();
    for (std::size_t f = 0; f < frames; ++f) {
      const auto t0 = Clock::now();
      call(f);
      const auto t1 = Clock::now();
      best[f] = std::min(best[f], ns_between(t0, t1));
    }
  }
  return best;
}

void print_row(const char* name, const std::vector<std::int64_t>& ns) {
  std::printf("%s", name);
  for (const std::int64_t v : ns) std::printf(" %lld", static_cast<long long>(v));
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s PCM_F32_FILE PACKETS_OUT_FILE ENCODE_REPEATS DECODE_REPEATS\n",
                 argv[0]);
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t frames = raw.size() / sizeof(float) / kFrameSamples;
  std::vector<float> pcm(frames * kFrameSamples);
  std::copy_n(raw.data(), pcm.size() * sizeof(float), reinterpret_cast<char*>(pcm.data()));
  std::vector<std::int16_t> pcm16(pcm.size());
  for (std::size_t i = 0; i < pcm.size(); ++i) {
    const float v = std::round(pcm[i] * 32768.0f);
    pcm16[i] = static_cast<std::int16_t>(std::clamp(v, -32768.0f, 32767.0f));
  }
  const int repeats = std::atoi(argv[3]);
  const int decode_repeats = std::atoi(argv[4]);

  int err = OPUS_OK;
  OpusEncoder* enc = opus_encoder_create(kRateHz, 1, OPUS_APPLICATION_VOIP, &err);
  check(err, "opus_encoder_create");
  check(opus_encoder_ctl(enc, OPUS_SET_BITRATE(32000)), "bitrate");
  check(opus_encoder_ctl(enc, OPUS_SET_COMPLEXITY(9)), "complexity");
  check(opus_encoder_ctl(enc, OPUS_SET_INBAND_FEC(1)), "fec");
  check(opus_encoder_ctl(enc, OPUS_SET_PACKET_LOSS_PERC(10)), "loss");
  OpusDecoder* dec = opus_decoder_create(kRateHz, 1, &err);
  check(err, "opus_decoder_create");

  std::vector<std::vector<unsigned char>> packets(frames);
  std::vector<unsigned char> out(kMaxPacketBytes);
  std::vector<float> pcm_out(kFrameSamples);
  std::vector<std::int16_t> pcm16_out(kFrameSamples);

  const auto reset_enc = [&] { opus_encoder_ctl(enc, OPUS_RESET_STATE); };
  const auto reset_dec = [&] { opus_decoder_ctl(dec, OPUS_RESET_STATE); };
  const auto enc_f32 = per_frame_min_ns(repeats, frames, reset_enc, [&](std::size_t f) {
    const int n = opus_encode_float(enc, pcm.data() + f * kFrameSamples, kFrameSamples, out.data(),
                                    kMaxPacketBytes);
    check(n, "opus_encode_float");
    packets[f].assign(out.begin(), out.begin() + n);
  });
  const auto enc_i16 = per_frame_min_ns(repeats, frames, reset_enc, [&](std::size_t f) {
    check(opus_encode(enc, pcm16.data() + f * kFrameSamples, kFrameSamples, out.data(),
                      kMaxPacketBytes),
          "opus_encode");
  });
  const auto dec_f32 = per_frame_min_ns(decode_repeats, frames, reset_dec, [&](std::size_t f) {
    check(opus_decode_float(dec, packets[f].data(), static_cast<opus_int32>(packets[f].size()),
                            pcm_out.data(), kFrameSamples, 0),
          "opus_decode_float");
  });
  const auto dec_i16 = per_frame_min_ns(decode_repeats, frames, reset_dec, [&](std::size_t f) {
    check(opus_decode(dec, packets[f].data(), static_cast<opus_int32>(packets[f].size()),
                      pcm16_out.data(), kFrameSamples, 0),
          "opus_decode");
  });
  std::int64_t timer_ns = INT64_MAX;
  for (int i = 0; i < 10000; ++i) {
    const auto t0 = Clock::now();
    const auto t1 = Clock::now();
    timer_ns = std::min(timer_ns, ns_between(t0, t1));
  }

  std::ofstream pk(argv[2], std::ios::binary);
  for (const auto& p : packets) {
    const unsigned char len[2] = {static_cast<unsigned char>(p.size() & 0xff),
                                  static_cast<unsigned char>(p.size() >> 8)};
    pk.write(reinterpret_cast<const char*>(len), 2);
    pk.write(reinterpret_cast<const char*>(p.data()), static_cast<std::streamsize>(p.size()));
  }
  std::printf("version %s\nframes %zu\ntimer_ns %lld\n", opus_get_version_string(), frames,
              static_cast<long long>(timer_ns));
  print_row("encode_f32", enc_f32);
  print_row("encode_i16", enc_i16);
  print_row("decode_f32", dec_f32);
  print_row("decode_i16", dec_i16);
  opus_encoder_destroy(enc);
  opus_decoder_destroy(dec);
  return 0;
}
