// Native cost of rtvoice::Resampler::process per 20 ms mono float32 chunk, without Python.
// Built and run by benchmarks/compare_resamplers.py:
//   g++ -O2 -std=c++17 -Icpp/include benchmarks/resampler_bench.cpp cpp/src/resampler.cpp
//   ./resampler_bench 24000:48000 48000:24000 ...
// Prints one line per pair: "in out kernel median_us min_us wall_median_us": microseconds per
// chunk, the median and the minimum over rounds of `kChunksPerRound` consecutive chunks, timed
// with the thread's CPU clock (time spent descheduled on a shared machine is not counted), then
// the median by the wall clock.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "rtvoice/resampler.hpp"

namespace {

constexpr int kChunksPerRound = 500;
constexpr int kRounds = 21;

double thread_cpu_us() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) * 1e-3;
}

void bench(int in_rate_hz, int out_rate_hz) {
  rtvoice::Resampler r(in_rate_hz, out_rate_hz, 1);
  const std::size_t chunk = static_cast<std::size_t>(in_rate_hz / 50);
  std::vector<float> in(chunk * 16);
  unsigned seed = 12345;
  for (float& v : in) {
    seed = seed * 1664525u + 1013904223u;
    v = static_cast<float>(static_cast<int>(seed >> 8) % 20000 - 10000) * 1e-5f;
  }
  std::vector<float> out(r.output_frames(chunk) + 8);
  volatile float sink = 0.0f;
  for (int i = 0; i < 200; ++i)
    r.process(in.data() + (i % 16) * chunk, chunk, out.data(), out.size());
  std::vector<double> per_chunk_us;
  std::vector<double> wall_us;
  for (int round = 0; round < kRounds; ++round) {
    const double cpu0 = thread_cpu_us();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kChunksPerRound; ++i) {
      r.process(in.data() + (i % 16) * chunk, chunk, out.data(), out.size());
      sink = sink + out[0];
    }
    const auto t1 = std::chrono::steady_clock::now();
    per_chunk_us.push_back((thread_cpu_us() - cpu0) / kChunksPerRound);
    wall_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / kChunksPerRound);
  }
  std::sort(per_chunk_us.begin(), per_chunk_us.end());
  std::sort(wall_us.begin(), wall_us.end());
  std::printf("%d %d %s %.3f %.3f %.3f\n", in_rate_hz, out_rate_hz, r.kernel_name(),
              per_chunk_us[per_chunk_us.size() / 2], per_chunk_us.front(),
              wall_us[wall_us.size() / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s IN:OUT [IN:OUT ...]\n", argv[0]);
    return 2;
  }
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto colon = arg.find(':');
    if (colon == std::string::npos) {
      std::fprintf(stderr, "bad pair %s (expected IN:OUT)\n", argv[i]);
      return 2;
    }
    bench(std::atoi(arg.substr(0, colon).c_str()), std::atoi(arg.substr(colon + 1).c_str()));
  }
  return 0;
}
