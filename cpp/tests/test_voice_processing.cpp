// The echo canceller's reference path across threads: the playout thread pulls the Downlink
// (writing its render tap) while the capture thread pushes the Uplink (reading the tap, running
// the processor) and another thread switches the processing stages and reads the statistics.
// Checks the counters add up; run under ASan/UBSan and TSan by the gates, which see any race on
// the tap, the processor's flags or the lazily published processor and reference.
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "check.hpp"
#include "rtvoice/audio_processing.hpp"
#include "rtvoice/pipelines.hpp"

namespace {

void run(rtvoice::ProcessingBackend backend) {
  rtvoice::DownlinkConfig dc;
  dc.mode = rtvoice::PipelineMode::Pcm16;
  dc.pcm_prebuffer_ms = 0;
  rtvoice::Downlink downlink(dc);
  rtvoice::UplinkConfig uc;
  uc.mode = rtvoice::PipelineMode::Pcm16;
  uc.ring_ms = 60000;
  rtvoice::Uplink uplink(uc);

  constexpr int kBlocks = 300;  // 20 ms blocks: 6 s of audio each way
  constexpr std::size_t kBlock = 960;
  std::vector<std::int16_t> far(24000 * 7);
  for (std::size_t i = 0; i < far.size(); ++i) {
    far[i] = static_cast<std::int16_t>((i * 37) % 4000) - 2000;
  }
  downlink.push_pcm(far.data(), far.size());

  std::atomic<bool> go{false};
  std::atomic<int> played{0};
  std::thread playout([&] {
    std::vector<float> out(kBlock);
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    for (int k = 0; k < kBlocks; ++k) {
      downlink.pull(out.data(), kBlock, 0);
      played.fetch_add(1, std::memory_order_release);
    }
  });
  std::thread capture([&] {
    std::vector<float> mic(kBlock, 0.01f);
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    for (int k = 0; k < kBlocks; ++k) {
      while (played.load(std::memory_order_acquire) <= k) std::this_thread::yield();
      uplink.push(mic.data(), kBlock);
    }
  });

  rtvoice::ProcessingConfig pc;
  pc.backend = backend;
  uplink.set_processing(pc);
  uplink.set_echo_reference(downlink, 20, 200);
  go.store(true, std::memory_order_release);
  std::uint64_t seen = 0;
  for (int i = 0; i < 200; ++i) {
    pc.noise_suppression = (i % 2) == 0;
    pc.agc = (i % 3) == 0;
    uplink.set_processing(pc);  // the stages switch while the capture thread runs
    const rtvoice::AudioProcessor* proc = uplink.processor();
    RTVOICE_CHECK(proc != nullptr);
    const std::uint64_t frames = proc->stats().frames;
    RTVOICE_CHECK(frames >= seen);
    seen = frames;
    std::this_thread::yield();
  }
  playout.join();
  capture.join();

  const rtvoice::ProcessingStats s = uplink.processor()->stats();
  RTVOICE_CHECK_EQ(s.frames, 2u * kBlocks);
  RTVOICE_CHECK_EQ(s.backend_errors, 0u);
  const rtvoice::UplinkStats us = uplink.stats();
  // Every capture frame had its far-end frame or was counted without one.
  RTVOICE_CHECK_EQ(s.render_frames, s.frames);
  RTVOICE_CHECK(us.reference_underruns + s.active_render_frames <= s.frames);
  RTVOICE_CHECK(s.active_render_frames > 0);
  RTVOICE_CHECK_EQ(us.frames_pushed, static_cast<std::uint64_t>(kBlocks) * kBlock);
  RTVOICE_CHECK_EQ(us.frames_dropped, 0u);
}

}  // namespace

int main() {
  for (rtvoice::ProcessingBackend backend : rtvoice::available_backends()) run(backend);
  return 0;
}
