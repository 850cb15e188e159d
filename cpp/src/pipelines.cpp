#include "rtvoice/pipelines.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "rtvoice/audio_decoder.hpp"
#include "rtvoice/sanitize.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define RTVOICE_HAVE_NOTIFY_FD 1
#endif

namespace rtvoice {
namespace {

std::size_t pow2_at_least(std::size_t n) {
  std::size_t p = 2;
  while (p < n) p <<= 1;
  return p;
}

void check_channels(int channels) {
  if (channels < 1 || channels > 2) {
    throw std::invalid_argument("channels must be 1 or 2, got " + std::to_string(channels));
  }
}

void check_rate(int rate_hz, const char* what) {
  if (!Resampler::is_supported_rate(rate_hz)) {
    throw std::invalid_argument(std::string(what) +
                                " must be one of 8000, 16000, 22050, 24000, 32000, 44100, "
                                "48000 Hz, got " +
                                std::to_string(rate_hz));
  }
}

// Opus decodes natively at these rates; others decode at 48 kHz and are resampled.
bool opus_native_rate(int rate_hz) {
  return rate_hz == 8000 || rate_hz == 12000 || rate_hz == 16000 || rate_hz == 24000 ||
         rate_hz == 48000;
}

const UplinkConfig& validated(const UplinkConfig& config) {
  check_rate(config.input_rate_hz, "input_rate");
  check_channels(config.channels);
  if (config.frame_ms != 10 && config.frame_ms != 20 && config.frame_ms != 40 &&
      config.frame_ms != 60) {
    throw std::invalid_argument("frame_ms must be 10, 20, 40 or 60, got " +
                                std::to_string(config.frame_ms));
  }
  if (config.ring_ms < 40 || config.ring_ms > 600000) {
    throw std::invalid_argument("ring_ms must be between 40 and 600000, got " +
                                std::to_string(config.ring_ms));
  }
  if (static_cast<long long>(config.input_rate_hz) * config.frame_ms % 1000 != 0) {
    throw std::invalid_argument("a frame is not a whole number of input samples");
  }
  if (config.partial_wait_ms < 0 || config.partial_wait_ms > 1000) {
    throw std::invalid_argument("partial_wait_ms must be between 0 and 1000, got " +
                                std::to_string(config.partial_wait_ms));
  }
  if (config.max_lag_ms < config.frame_ms || config.max_lag_ms > 60000) {
    throw std::invalid_argument("max_lag_ms must be between frame_ms and 60000, got " +
                                std::to_string(config.max_lag_ms));
  }
  return config;
}

}  // namespace

// ------------------------------------------------------------------------------------------
// Uplink

Uplink::Uplink(const UplinkConfig& config)
    : config_(validated(config)),
      transport_rate_hz_(config.mode == PipelineMode::Opus ? kOpusRtpClockHz : kPcmTransportRateHz),
      input_frame_(0),
      ring_(pow2_at_least(static_cast<std::size_t>(config.input_rate_hz / 1000 + 1) *
                          static_cast<std::size_t>(config.ring_ms)),
            static_cast<std::size_t>(config.channels)),
      resampler_(config.input_rate_hz,
                 config.mode == PipelineMode::Opus ? kOpusRtpClockHz : kPcmTransportRateHz,
                 config.channels),
      framer_(config.mode == PipelineMode::Opus ? kOpusRtpClockHz : kPcmTransportRateHz,
              config.frame_ms, config.channels),
      next_seq_(config.initial_seq),
      next_due_ns_(std::numeric_limits<std::int64_t>::min()) {
  input_frame_ = static_cast<std::size_t>(static_cast<long long>(config.input_rate_hz) *
                                          config.frame_ms / 1000);
  const std::size_t ch = static_cast<std::size_t>(config.channels);
  if (config.mode == PipelineMode::Opus) {
    OpusEncoderConfig ec;
    ec.sample_rate_hz = kOpusRtpClockHz;
    ec.channels = config.channels;
    ec.application = OpusApplication::Voip;
    ec.bitrate_bps = config.bitrate_bps;
    ec.complexity = config.complexity;
    ec.fec = config.fec;
    ec.packet_loss_perc = config.packet_loss_perc;
    ec.dtx = config.dtx;
    encoder_ = std::make_unique<OpusEncoder>(ec);
    packet_.resize(kOpusMaxPacketBytes);
  } else {
    packet_.resize(framer_.frame_frames() * ch * sizeof(std::int16_t));
  }
  convert_.resize(input_frame_ * ch);
  sanitized_.resize(input_frame_ * ch);
  in_chunk_.resize(input_frame_ * ch);
  resampled_.resize((resampler_.output_frames(input_frame_) + resampler_.latency_frames() + 8) *
                    ch);
  frames_.resize(kFrameSlots * framer_.frame_frames() * ch);
}

Uplink::~Uplink() = default;

std::size_t Uplink::push_impl(const float* pcm, std::size_t frames) {
  const std::uint64_t before = ring_.frames_written();
  const std::size_t n = ring_.write(pcm, frames);
  frames_pushed_.fetch_add(n, std::memory_order_relaxed);
#ifdef RTVOICE_HAVE_NOTIFY_FD
  if (config_.notify_fd >= 0 && n != 0 && (before + n) / input_frame_ != before / input_frame_) {
    const std::uint64_t one = 1;
    // Non-blocking by contract of the fd's owner; a full pipe only means a wakeup is pending.
    [[maybe_unused]] const auto written = ::write(config_.notify_fd, &one, sizeof one);
  }
#else
  (void)before;
#endif
  return n;
}

std::size_t Uplink::push(const float* pcm, std::size_t frames) {
  const std::size_t ch = static_cast<std::size_t>(config_.channels);
  if (all_finite(pcm, frames * ch)) return accept(pcm, frames);
  // Non-finite samples would spread through the resampler and the encoder: replace, count.
  std::size_t done = 0;
  while (done < frames) {
    const std::size_t n = std::min(frames - done, input_frame_);
    nonfinite_.fetch_add(copy_finite(pcm + done * ch, sanitized_.data(), n * ch),
                         std::memory_order_relaxed);
    const std::size_t written = accept(sanitized_.data(), n);
    done += written;
    if (written < n) {
      // The ring is full: the rest of this call is dropped too (the ring counted n - written).
      frames_refused_.fetch_add(frames - done - (n - written), std::memory_order_relaxed);
      break;
    }
  }
  return done;
}

std::size_t Uplink::push(const std::int16_t* pcm, std::size_t frames) {
  const std::size_t ch = static_cast<std::size_t>(config_.channels);
  std::size_t done = 0;
  while (done < frames) {
    const std::size_t n = std::min(frames - done, input_frame_);
    for (std::size_t i = 0; i < n * ch; ++i) {
      convert_[i] = static_cast<float>(pcm[done * ch + i]) * (1.0f / 32768.0f);
    }
    const std::size_t written = accept(convert_.data(), n);
    done += written;
    if (written < n) {
      frames_refused_.fetch_add(frames - done - (n - written), std::memory_order_relaxed);
      break;
    }
  }
  return done;
}

// The far-end reference as the capture thread sees it: the Downlink's render tap, resampled to
// the input rate when the two rates differ.
struct Uplink::EchoReference {
  SpscRing<float>* tap = nullptr;
  std::unique_ptr<Resampler> resampler;  // null when the output rate is the input rate
  std::size_t tap_frame = 0;             // tap frames per 10 ms
  std::size_t lead_frames = 0;           // tap fill kept ahead of the capture stream
  std::size_t max_lead_frames = 0;       // above this fill (for a while) it is re-aligned
  std::vector<float> raw;                // one 10 ms tap frame
  std::vector<float> frame;              // one 10 ms frame at the input rate
  // The alignment is set when the far end first plays (primed: the fill brought to the lead)
  // and then kept. A capture frame whose far end has not come yet (an underrun) gets silence and
  // the reference slips one frame: the lead it takes to absorb the two callbacks' jitter grows
  // by that, and is what any later alignment keeps. Only a speaker that stopped (more missing
  // than the slack) or one that stays ahead for kExcessReads frames is aligned again.
  bool primed = false;
  std::size_t lead_target = 0;   // tap frames: the lead_frames plus the slips since
  std::size_t missing = 0;       // consecutive underruns, in tap frames
  std::size_t run_slips = 0;     // of those, the ones that grew lead_target
  std::size_t excess_reads = 0;  // consecutive reads with the fill above max_lead_frames
};

namespace {
constexpr std::size_t kExcessReads = 25;  // 250 ms: longer than a capture burst after a stall
}  // namespace

void Uplink::set_processing(const ProcessingConfig& config) {
  if (AudioProcessor* existing = proc_.load(std::memory_order_acquire)) {
    if (existing->config().backend != config.backend) {
      throw std::invalid_argument(std::string("voice processing already runs on the ") +
                                  backend_name(existing->config().backend) + " backend");
    }
    existing->set_enabled(config.aec, config.noise_suppression, config.agc, config.high_pass);
    existing->set_stream_delay_ms(config.stream_delay_ms);
    return;
  }
  if (config_.channels != 1) throw std::invalid_argument("voice processing needs a mono Uplink");
  ProcessingConfig c = config;
  c.sample_rate_hz = config_.input_rate_hz;
  if (proc_creating_.exchange(true, std::memory_order_acq_rel)) {
    throw std::runtime_error("set_processing was called from two threads at once");
  }
  try {
    proc_owner_ = std::make_unique<AudioProcessor>(c);
  } catch (...) {
    proc_creating_.store(false, std::memory_order_release);
    throw;
  }
  proc_block_.assign(proc_owner_->frame_samples(), 0.0f);
  proc_.store(proc_owner_.get(), std::memory_order_release);
}

void Uplink::set_echo_reference(Downlink& downlink, int lead_ms, int max_lead_ms) {
  if (ref_.load(std::memory_order_acquire) != nullptr) {
    throw std::logic_error("this Uplink already has an echo reference");
  }
  if (lead_ms < 0 || lead_ms > 500 || max_lead_ms < lead_ms + 20 || max_lead_ms > 900) {
    throw std::invalid_argument(
        "echo reference: lead_ms must be 0..500 and max_lead_ms between lead_ms + 20 and 900");
  }
  const int out_rate = downlink.config().output_rate_hz;
  if (out_rate % 100 != 0) throw std::invalid_argument("the Downlink's rate is not 10 ms aligned");
  if (ref_creating_.exchange(true, std::memory_order_acq_rel)) {
    throw std::logic_error("this Uplink already has an echo reference");
  }
  auto ref = std::make_unique<EchoReference>();
  ref->tap_frame = static_cast<std::size_t>(out_rate / 100);
  ref->lead_frames = static_cast<std::size_t>(out_rate / 1000 * lead_ms);
  ref->lead_target = std::max(ref->lead_frames, ref->tap_frame);
  ref->max_lead_frames = static_cast<std::size_t>(out_rate / 1000 * max_lead_ms);
  ref->raw.assign(ref->tap_frame, 0.0f);
  const std::size_t in_frame = static_cast<std::size_t>(config_.input_rate_hz / 100);
  ref->frame.assign(in_frame + 64, 0.0f);
  if (out_rate != config_.input_rate_hz) {
    ref->resampler = std::make_unique<Resampler>(out_rate, config_.input_rate_hz, 1);
  }
  ref->tap = &downlink.enable_render_tap();
  ref_owner_ = std::move(ref);
  ref_.store(ref_owner_.get(), std::memory_order_release);
}

const float* Uplink::next_reference(std::size_t frames) {
  EchoReference* ref = ref_.load(std::memory_order_acquire);
  if (ref == nullptr) return nullptr;
  std::size_t fill = ref->tap->available_frames();
  ref->excess_reads = fill > ref->max_lead_frames ? ref->excess_reads + 1 : 0;
  if ((!ref->primed || ref->excess_reads >= kExcessReads) && fill >= ref->lead_target) {
    // (Re-)align: the reference lead_target ahead of the capture stream.
    if (fill > ref->lead_target) {
      ref->tap->discard(fill - ref->lead_target);
      reference_resyncs_.fetch_add(1, std::memory_order_relaxed);
      fill = ref->lead_target;
    }
    ref->primed = true;
    ref->excess_reads = 0;
  }
  float* out = ref->frame.data();
  if (!ref->primed || fill < ref->tap_frame) {
    std::fill(ref->frame.begin(), ref->frame.end(), 0.0f);
    reference_underruns_.fetch_add(1, std::memory_order_relaxed);
    if (ref->primed) {
      ref->missing += ref->tap_frame;
      if (ref->missing > ref->max_lead_frames - ref->lead_frames) {
        // The speaker stopped, it was not jitter: align again when it plays, with the lead
        // learnt before.
        ref->primed = false;
        ref->lead_target -= ref->run_slips * ref->tap_frame;
        ref->missing = 0;
        ref->run_slips = 0;
      } else if (ref->lead_target + ref->tap_frame <= ref->max_lead_frames / 2) {
        ref->lead_target += ref->tap_frame;  // the slip: this much more lead from now on
        ++ref->run_slips;
      }
    }
    return out;
  }
  ref->missing = 0;
  ref->run_slips = 0;
  ref->tap->read(ref->raw.data(), ref->tap_frame);
  if (!ref->resampler) return ref->raw.data();
  const std::size_t got =
      ref->resampler->process(ref->raw.data(), ref->tap_frame, out, ref->frame.size());
  if (got < frames) std::fill(out + got, out + frames, 0.0f);
  return out;
}

void Uplink::set_device_rate(int device_rate_hz) {
  check_rate(device_rate_hz, "device_rate");
  if (config_.channels != 1) throw std::invalid_argument("device rates need a mono Uplink");
  device_rate_hz_ = device_rate_hz;
  if (device_rate_hz == config_.input_rate_hz) {
    device_resampler_.reset();
    return;
  }
  device_resampler_ = std::make_unique<Resampler>(device_rate_hz, config_.input_rate_hz, 1);
  device_chunk_ = static_cast<std::size_t>(device_rate_hz / 100);  // 10 ms steps
  device_converted_.assign(device_resampler_->output_frames(device_chunk_) + 64, 0.0f);
}

std::size_t Uplink::push_device(const float* pcm, std::size_t frames) {
  if (!device_resampler_) return push(pcm, frames);
  std::size_t done = 0;
  while (done < frames) {
    const std::size_t n = std::min(frames - done, device_chunk_);
    const std::size_t out = device_resampler_->process(pcm + done, n, device_converted_.data(),
                                                       device_converted_.size());
    const std::size_t accepted = push(device_converted_.data(), out);
    done += n;
    if (accepted < out) {
      // The ring is full; the rest of the block is dropped and counted like any push.
      frames_refused_.fetch_add(static_cast<std::uint64_t>(frames - done) *
                                    static_cast<std::uint64_t>(config_.input_rate_hz) /
                                    static_cast<std::uint64_t>(device_rate_hz_),
                                std::memory_order_relaxed);
      return done;
    }
  }
  return frames;
}

std::size_t Uplink::accept(const float* pcm, std::size_t frames) {
  AudioProcessor* proc = proc_.load(std::memory_order_acquire);
  if (proc == nullptr) return push_impl(pcm, frames);
  return accept_processed(*proc, pcm, frames);
}

std::size_t Uplink::accept_processed(AudioProcessor& proc, const float* pcm, std::size_t frames) {
  const std::size_t frame = proc.frame_samples();
  std::size_t refused = 0;
  std::size_t done = 0;
  while (done < frames) {
    const std::size_t n = std::min(frames - done, frame - proc_fill_);
    std::memcpy(proc_block_.data() + proc_fill_, pcm + done, n * sizeof(float));
    proc_fill_ += n;
    done += n;
    if (proc_fill_ < frame) break;
    proc.process(next_reference(frame), proc_block_.data());
    refused += frame - push_impl(proc_block_.data(), frame);
    proc_fill_ = 0;
  }
  return frames - std::min(frames, refused);
}

bool Uplink::encode_one(const float* frame, std::uint64_t first, UplinkPacketInfo& info) {
  const std::size_t ch = static_cast<std::size_t>(config_.channels);
  const int frame_samples = static_cast<int>(framer_.frame_frames());
  double energy = 0.0;
  for (std::size_t i = 0; i < framer_.frame_frames() * ch; ++i) {
    energy += static_cast<double>(frame[i]) * static_cast<double>(frame[i]);
  }
  last_frame_energy_ = energy;
  int bytes = 0;
  if (config_.mode == PipelineMode::Opus) {
    bytes =
        encoder_->encode(frame, frame_samples, packet_.data(), static_cast<int>(packet_.size()));
    if (bytes < 0) {
      encode_errors_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  } else {
    for (std::size_t i = 0; i < framer_.frame_frames() * ch; ++i) {
      const float v = std::clamp(frame[i] * 32768.0f, -32768.0f, 32767.0f);
      const auto s = static_cast<std::int16_t>(std::lrint(v));
      // Little-endian PCM16, as the WebSocket transport sends it.
      packet_[2 * i] = static_cast<std::uint8_t>(static_cast<std::uint16_t>(s) & 0xFF);
      packet_[2 * i + 1] = static_cast<std::uint8_t>(static_cast<std::uint16_t>(s) >> 8);
    }
    bytes = static_cast<int>(framer_.frame_frames() * ch * 2);
  }
  info.bytes = static_cast<std::size_t>(bytes);
  info.first_sample = first;
  info.timestamp = static_cast<std::uint32_t>(config_.initial_timestamp + first);
  info.seq = next_seq_++;
  packets_.fetch_add(1, std::memory_order_relaxed);
  payload_bytes_.fetch_add(static_cast<std::uint64_t>(bytes), std::memory_order_relaxed);
  return true;
}

void Uplink::feed(const float* in, std::size_t frames, bool flush_resampler) {
  const std::size_t ch = static_cast<std::size_t>(config_.channels);
  const std::size_t frame_values = framer_.frame_frames() * ch;
  const std::size_t produced =
      flush_resampler ? resampler_.flush(resampled_.data(), resampled_.size() / ch)
                      : resampler_.process(in, frames, resampled_.data(), resampled_.size() / ch);
  framer_.push(resampled_.data(), produced, [&](const float* frame, std::uint64_t first) {
    queue_frame(frame, first, frame_values);
  });
}

void Uplink::queue_frame(const float* frame, std::uint64_t first, std::size_t frame_values) {
  // Never more than kFrameSlots: input is fed one frame's worth at a time.
  const std::size_t slot = (frames_head_ + frames_count_) % kFrameSlots;
  std::memcpy(frames_.data() + slot * frame_values, frame, frame_values * sizeof(float));
  frame_firsts_[slot] = first;
  ++frames_count_;
}

bool Uplink::pop_packet(std::uint8_t* out, std::size_t capacity, UplinkPacketInfo& info) {
  const std::size_t ch = static_cast<std::size_t>(config_.channels);
  const std::size_t frame_values = framer_.frame_frames() * ch;
  for (;;) {
    if (frames_count_ != 0) {
      const bool ok = encode_one(frames_.data() + frames_head_ * frame_values,
                                 frame_firsts_[frames_head_], info);
      frames_head_ = (frames_head_ + 1) % kFrameSlots;
      --frames_count_;
      if (!ok) continue;
      if (info.bytes > capacity) throw std::invalid_argument("pop_packet: buffer too small");
      std::memcpy(out, packet_.data(), info.bytes);
      return true;
    }
    // Input is consumed in whole frames, so each step yields exactly one output frame. One
    // snapshot of the ring's fill: the capture thread may push between two looks, and in_chunk_
    // holds one frame, so the short read below must be of what was seen here.
    const std::size_t avail = ring_.available_frames();
    if (avail >= input_frame_) {
      ring_.read(in_chunk_.data(), input_frame_);
      feed(in_chunk_.data(), input_frame_, false);
      continue;
    }
    if (finish_stage_ == 1) {
      const std::size_t rest = avail;  // < input_frame_
      if (rest != 0) {
        ring_.read(in_chunk_.data(), rest);
        feed(in_chunk_.data(), rest, false);
      }
      feed(nullptr, 0, true);  // the resampler's held-back tail
      finish_stage_ = 2;
      continue;
    }
    if (finish_stage_ == 2) {
      framer_.flush([&](const float* frame, std::uint64_t first) {
        queue_frame(frame, first, frame_values);
      });
      finish_stage_ = 0;
      continue;
    }
    return false;
  }
}

void Uplink::finish() {
  if (finish_stage_ == 0) finish_stage_ = 1;
}

bool Uplink::pop_due(std::int64_t now_ns, std::uint8_t* out, std::size_t capacity,
                     UplinkPacketInfo& info) {
  const std::int64_t frame_ns = static_cast<std::int64_t>(config_.frame_ms) * 1000000;
  if (!clock_started_) {
    clock_started_ = true;
    clock_start_ns_ = now_ns;
    due_index_ = 0;
  }
  std::int64_t due = clock_start_ns_ + static_cast<std::int64_t>(due_index_) * frame_ns;
  if (now_ns < due) return false;
  // One snapshot of the ring's fill (see pop_packet): a second look could see a frame or more
  // that the capture thread pushed meanwhile, too much for in_chunk_.
  const std::size_t avail = frames_count_ == 0 ? ring_.available_frames() : 0;
  if (frames_count_ == 0 && avail < input_frame_) {
    const std::size_t ch = static_cast<std::size_t>(config_.channels);
    const std::int64_t late_ns = now_ns - due;
    // The producer is mid-frame, or was sending and its next frame is a little late (a
    // microphone whose callbacks fall near the due time): a short wait beats splitting speech
    // with zeros, and beats a silence packet that would leave the input a frame behind.
    if ((avail != 0 || last_was_input_) &&
        late_ns < static_cast<std::int64_t>(config_.partial_wait_ms) * 1000000) {
      return false;
    }
    if (avail == 0 && late_ns > static_cast<std::int64_t>(config_.max_lag_ms) * 1000000) {
      // Starved with nothing to send: bursting the missed silence would only add delay.
      clock_start_ns_ = now_ns - static_cast<std::int64_t>(due_index_) * frame_ns;
      clock_resets_.fetch_add(1, std::memory_order_relaxed);
    }
    if (avail != 0) ring_.read(in_chunk_.data(), avail);
    std::fill(in_chunk_.begin() + static_cast<std::ptrdiff_t>(avail * ch), in_chunk_.end(), 0.0f);
    feed(in_chunk_.data(), input_frame_, false);
    (avail != 0 ? padded_frames_ : silent_frames_).fetch_add(1, std::memory_order_relaxed);
    last_was_input_ = avail != 0;
  } else {
    input_frames_sent_.fetch_add(1, std::memory_order_relaxed);
    last_was_input_ = true;
  }
  const bool got = pop_packet(out, capacity, info);
  if (got) note_sent(now_ns);
  ++due_index_;
  next_due_ns_.store(clock_start_ns_ + static_cast<std::int64_t>(due_index_) * frame_ns,
                     std::memory_order_release);
  return got;
}

std::size_t Uplink::take_input(float* out, std::size_t max_frames) {
  const std::size_t n = std::min(max_frames, ring_.available_frames());
  if (n != 0) ring_.read(out, n);
  return n;
}

void Uplink::set_packet_loss_perc(int percent) {
  if (encoder_) encoder_->set_packet_loss_perc(percent);
}
void Uplink::set_bitrate(int bps) {
  if (encoder_) encoder_->set_bitrate(bps);
}
void Uplink::set_fec(bool enabled) {
  if (encoder_) encoder_->set_fec(enabled);
}
void Uplink::set_dtx(bool enabled) {
  if (encoder_) encoder_->set_dtx(enabled);
}

UplinkStats Uplink::stats() const {
  UplinkStats s;
  s.frames_pushed = frames_pushed_.load(std::memory_order_relaxed);
  s.frames_dropped = ring_.overrun_frames() + frames_refused_.load(std::memory_order_relaxed);
  s.packets = packets_.load(std::memory_order_relaxed);
  s.payload_bytes = payload_bytes_.load(std::memory_order_relaxed);
  s.encode_errors = encode_errors_.load(std::memory_order_relaxed);
  s.nonfinite_samples = nonfinite_.load(std::memory_order_relaxed);
  s.input_frames_sent = input_frames_sent_.load(std::memory_order_relaxed);
  s.padded_frames = padded_frames_.load(std::memory_order_relaxed);
  s.silent_frames = silent_frames_.load(std::memory_order_relaxed);
  s.clock_resets = clock_resets_.load(std::memory_order_relaxed);
  s.voiced_frames = voiced_frames_.load(std::memory_order_relaxed);
  s.last_voiced_ns = last_voiced_ns_.load(std::memory_order_relaxed);
  s.sent_energy = sent_energy_.load(std::memory_order_relaxed);
  s.sent_samples = sent_samples_.load(std::memory_order_relaxed);
  s.send_intervals = send_intervals_.load(std::memory_order_relaxed);
  s.send_interval_sum_ms = send_interval_sum_ms_.load(std::memory_order_relaxed);
  s.send_interval_sumsq_ms2 = send_interval_sumsq_ms2_.load(std::memory_order_relaxed);
  s.send_interval_max_ms = send_interval_max_ms_.load(std::memory_order_relaxed);
  s.send_intervals_over_30ms = send_intervals_over_30ms_.load(std::memory_order_relaxed);
  s.reference_underruns = reference_underruns_.load(std::memory_order_relaxed);
  s.reference_resyncs = reference_resyncs_.load(std::memory_order_relaxed);
  return s;
}

void Uplink::note_sent(std::int64_t now_ns) {
  // Single writer (the network thread): load + store is an exact sum.
  const std::size_t values = framer_.frame_frames() * static_cast<std::size_t>(config_.channels);
  sent_energy_.store(sent_energy_.load(std::memory_order_relaxed) + last_frame_energy_,
                     std::memory_order_relaxed);
  sent_samples_.fetch_add(values, std::memory_order_relaxed);
  const double threshold = std::pow(10.0, config_.voice_threshold_dbfs / 10.0);
  if (last_frame_energy_ >= threshold * static_cast<double>(values)) {
    voiced_frames_.fetch_add(1, std::memory_order_relaxed);
    last_voiced_ns_.store(now_ns, std::memory_order_relaxed);
  }
  if (last_send_ns_ != 0) {
    const double interval_ms = static_cast<double>(now_ns - last_send_ns_) * 1e-6;
    send_interval_sum_ms_.store(send_interval_sum_ms_.load(std::memory_order_relaxed) + interval_ms,
                                std::memory_order_relaxed);
    send_interval_sumsq_ms2_.store(
        send_interval_sumsq_ms2_.load(std::memory_order_relaxed) + interval_ms * interval_ms,
        std::memory_order_relaxed);
    send_intervals_.fetch_add(1, std::memory_order_relaxed);
    if (interval_ms > 30.0) send_intervals_over_30ms_.fetch_add(1, std::memory_order_relaxed);
    send_window_max_ms_ = std::max(send_window_max_ms_, interval_ms);
    if (now_ns - send_window_start_ns_ >= 500000000) {
      send_interval_max_ms_.store(send_window_max_ms_, std::memory_order_relaxed);
      send_window_max_ms_ = 0.0;
      send_window_start_ns_ = now_ns;
    }
  } else {
    send_window_start_ns_ = now_ns;
  }
  last_send_ns_ = now_ns;
}

std::size_t Uplink::pending_input_frames() const {
  return static_cast<std::size_t>(ring_.frames_written() - ring_.frames_read());
}

// ------------------------------------------------------------------------------------------
// Downlink

// Sequence lock over a trivially copyable snapshot, built from atomics only.
struct Downlink::Published {
  static constexpr std::size_t kWords = (sizeof(DownlinkStats) + 7) / 8;
  std::atomic<std::uint64_t> version{0};
  std::array<std::atomic<std::uint64_t>, kWords> words{};

  // Release stores of the words and acquire loads of them order the version checks without
  // fences (which ThreadSanitizer does not model); on x86 and ARM64 they cost nothing extra.
  void store(const DownlinkStats& s) {
    std::array<std::uint64_t, kWords> raw{};
    std::memcpy(raw.data(), static_cast<const void*>(&s), sizeof s);
    const std::uint64_t v = version.load(std::memory_order_relaxed);
    version.store(v + 1, std::memory_order_relaxed);
    for (std::size_t i = 0; i < kWords; ++i) words[i].store(raw[i], std::memory_order_release);
    version.store(v + 2, std::memory_order_release);
  }

  DownlinkStats load() const {
    std::array<std::uint64_t, kWords> raw{};
    for (;;) {
      const std::uint64_t v1 = version.load(std::memory_order_acquire);
      for (std::size_t i = 0; i < kWords; ++i) raw[i] = words[i].load(std::memory_order_acquire);
      const std::uint64_t v2 = version.load(std::memory_order_relaxed);
      if (v1 == v2 && (v1 & 1) == 0) break;
    }
    DownlinkStats s;
    std::memcpy(static_cast<void*>(&s), raw.data(), sizeof s);
    return s;
  }
};
static_assert(std::is_trivially_copyable_v<DownlinkStats>);

Downlink::Downlink(const DownlinkConfig& config)
    : config_(config),
      decode_rate_hz_(0),
      // PCM mode takes no packets: its queue is the smallest there is.
      queue_(config.mode == PipelineMode::Opus
                 ? pow2_at_least(static_cast<std::size_t>(std::max(config.queue_packets, 2)))
                 : 2,
             config.mode == PipelineMode::Opus
                 ? static_cast<std::size_t>(std::max(config.jitter.max_payload_bytes, 1))
                 : 1),
      decode_frame_(0),
      published_(std::make_unique<Published>()) {
  check_rate(config.output_rate_hz, "output_rate");
  check_channels(config.channels);
  const std::size_t ch = static_cast<std::size_t>(config.channels);
  if (config.mode == PipelineMode::Opus) {
    decode_rate_hz_ = opus_native_rate(config.output_rate_hz) ? config.output_rate_hz : 48000;
    jitter_ = std::make_unique<JitterBuffer>(make_opus_decoder(decode_rate_hz_, config.channels),
                                             config.jitter);
    decode_frame_ = static_cast<std::size_t>(jitter_->frame_samples());
  } else {
    if (config.pcm_ring_ms < 100 || config.pcm_ring_ms > 600000) {
      throw std::invalid_argument("pcm_ring_ms must be between 100 and 600000");
    }
    if (config.pcm_prebuffer_ms < 0 || config.pcm_prebuffer_ms > 2000) {
      throw std::invalid_argument("pcm_prebuffer_ms must be between 0 and 2000");
    }
    decode_rate_hz_ = kPcmTransportRateHz;
    decode_frame_ = static_cast<std::size_t>(kPcmTransportRateHz / 1000 * 10);
    pcm_ring_ = std::make_unique<SpscRing<std::int16_t>>(
        pow2_at_least(static_cast<std::size_t>(kPcmTransportRateHz / 1000 * config.pcm_ring_ms)),
        ch);
    pcm_in_.resize(decode_frame_ * ch);
  }
  if (decode_rate_hz_ != config.output_rate_hz) {
    resampler_ =
        std::make_unique<Resampler>(decode_rate_hz_, config.output_rate_hz, config.channels);
  }
  decoded_.resize(decode_frame_ * ch);
  const std::size_t out_frame =
      resampler_ ? resampler_->output_frames(decode_frame_) + 2 : decode_frame_;
  resampled_.resize(out_frame * ch);
  // A pull may ask for up to one second; pending holds that plus one produced block.
  pending_.resize((static_cast<std::size_t>(config.output_rate_hz) + 2 * out_frame) * ch);
  blocks_.assign(128, Block{});
  voice_power_ = std::pow(10.0, config.voice_threshold_dbfs / 10.0);
  publish();
}

Downlink::~Downlink() = default;

bool Downlink::push_rtp(std::uint16_t seq, std::uint32_t timestamp, const std::uint8_t* payload,
                        std::size_t bytes, std::int64_t arrival_ns) {
  if (config_.mode != PipelineMode::Opus) {
    throw std::logic_error("push_rtp needs a Downlink in Opus mode");
  }
  return queue_.push(seq, timestamp, payload, bytes, arrival_ns);
}

std::size_t Downlink::push_pcm(const std::int16_t* pcm, std::size_t frames) {
  if (config_.mode != PipelineMode::Pcm16) {
    throw std::logic_error("push_pcm needs a Downlink in PCM mode");
  }
  return pcm_ring_->write(pcm, frames);
}

SpscRing<float>& Downlink::enable_render_tap() {
  if (SpscRing<float>* tap = tap_.load(std::memory_order_acquire)) return *tap;
  if (config_.channels != 1) throw std::invalid_argument("the render tap needs a mono Downlink");
  if (tap_creating_.exchange(true, std::memory_order_acq_rel)) {
    SpscRing<float>* tap = nullptr;
    while ((tap = tap_.load(std::memory_order_acquire)) == nullptr) std::this_thread::yield();
    return *tap;
  }
  tap_owner_ = std::make_unique<SpscRing<float>>(
      pow2_at_least(static_cast<std::size_t>(config_.output_rate_hz)), 1);
  tap_.store(tap_owner_.get(), std::memory_order_release);
  return *tap_owner_;
}

void Downlink::set_device_rate(int device_rate_hz) {
  check_rate(device_rate_hz, "device_rate");
  if (config_.channels != 1) throw std::invalid_argument("device rates need a mono Downlink");
  device_rate_hz_ = device_rate_hz;
  device_pending_frames_ = 0;
  if (device_rate_hz == config_.output_rate_hz) {
    device_resampler_.reset();
    return;
  }
  device_resampler_ = std::make_unique<Resampler>(config_.output_rate_hz, device_rate_hz, 1);
  device_block_.assign(static_cast<std::size_t>(config_.output_rate_hz / 100), 0.0f);
  // A pull may ask for up to a second; pending holds that plus one converted block.
  const std::size_t block_out = device_resampler_->output_frames(device_block_.size()) + 64;
  device_pending_.assign(static_cast<std::size_t>(device_rate_hz) + 2 * block_out, 0.0f);
}

void Downlink::pull_device(float* out, std::size_t frames, std::int64_t now_ns) {
  if (!device_resampler_) {
    pull(out, frames, now_ns);
    return;
  }
  if (frames > static_cast<std::size_t>(device_rate_hz_)) {
    throw std::invalid_argument("pull: at most one second of audio per call");
  }
  const double ns_per_frame = 1e9 / device_rate_hz_;
  while (device_pending_frames_ < frames) {
    // The block pulled now plays after what is already converted.
    pull(device_block_.data(), device_block_.size(),
         now_ns +
             static_cast<std::int64_t>(static_cast<double>(device_pending_frames_) * ns_per_frame));
    const std::size_t room = device_pending_.size() - device_pending_frames_;
    device_pending_frames_ +=
        device_resampler_->process(device_block_.data(), device_block_.size(),
                                   device_pending_.data() + device_pending_frames_, room);
  }
  std::memcpy(out, device_pending_.data(), frames * sizeof(float));
  device_pending_frames_ -= frames;
  std::memmove(device_pending_.data(), device_pending_.data() + frames,
               device_pending_frames_ * sizeof(float));
}

void Downlink::request_flush() { flush_requested_.fetch_add(1, std::memory_order_acq_rel); }

void Downlink::apply_flush() {
  queue_.clear();
  if (jitter_) jitter_->flush();
  if (pcm_ring_) pcm_ring_->discard(pcm_ring_->available_frames());
  if (resampler_) resampler_->reset();
  pcm_playing_ = false;
  pending_frames_ = 0;
  pending_media_ = 0;
  blocks_head_ = 0;
  blocks_count_ = 0;
}

void Downlink::append(const float* pcm, std::size_t frames, bool media, std::int64_t arrival_ns,
                      std::int64_t jb_ns) {
  const std::size_t ch = static_cast<std::size_t>(config_.channels);
  const float* src = pcm;
  std::size_t n = frames;
  if (resampler_) {
    n = resampler_->process(pcm, frames, resampled_.data(), resampled_.size() / ch);
    src = resampled_.data();
  }
  std::memcpy(pending_.data() + pending_frames_ * ch, src, n * ch * sizeof(float));
  // Media accounting is kept per produced block: a block is media or filler as a whole.
  if (media && pending_media_ == pending_frames_) pending_media_ += n;
  pending_frames_ += n;
  if (n == 0) return;
  if (blocks_count_ == blocks_.size()) {
    // More blocks than slots (tiny pulls of a long pending run): the newest absorbs this one.
    blocks_[(blocks_head_ + blocks_count_ - 1) % blocks_.size()].frames += n;
    return;
  }
  blocks_[(blocks_head_ + blocks_count_) % blocks_.size()] = Block{n, 0, arrival_ns, jb_ns};
  ++blocks_count_;
}

void Downlink::scan_output(const float* out, std::size_t frames, std::int64_t now_ns) {
  const std::size_t ch = static_cast<std::size_t>(config_.channels);
  const std::size_t window = static_cast<std::size_t>(config_.output_rate_hz / 200);  // 5 ms
  const double ns_per_frame = 1e9 / config_.output_rate_hz;
  const std::int64_t gap_ns = std::int64_t{DownlinkStats::kOnsetGapMs} * 1000000;
  std::size_t block = 0;        // index (from the head) of the block holding output frame `pos`
  std::size_t block_start = 0;  // output frame at which that block's unconsumed part starts
  for (std::size_t pos = 0; pos < frames; pos += window) {
    const std::size_t n = std::min(window, frames - pos);
    double energy = 0.0;
    for (std::size_t i = pos * ch; i < (pos + n) * ch; ++i) {
      energy += static_cast<double>(out[i]) * static_cast<double>(out[i]);
    }
    output_energy_ += energy;
    if (energy < voice_power_ * static_cast<double>(n * ch)) continue;
    const std::int64_t t =
        now_ns + static_cast<std::int64_t>(static_cast<double>(pos) * ns_per_frame);
    if (!have_voiced_ || t - last_voiced_ns_ >= gap_ns) {
      while (block + 1 < blocks_count_) {
        const Block& b = blocks_[(blocks_head_ + block) % blocks_.size()];
        if (block_start + (b.frames - b.consumed) > pos) break;
        block_start += b.frames - b.consumed;
        ++block;
      }
      const std::size_t k = voice_onsets_ % DownlinkStats::kOnsetHistory;
      onset_play_ns_[k] = t;
      if (blocks_count_ != 0) {
        const Block& b = blocks_[(blocks_head_ + block) % blocks_.size()];
        const double first = static_cast<double>(block_start) - static_cast<double>(b.consumed);
        onset_block_play_ns_[k] = now_ns + static_cast<std::int64_t>(first * ns_per_frame);
        onset_jb_ns_[k] = b.jb_ns;
        onset_arrival_ns_[k] = b.arrival_ns;
      } else {
        onset_block_play_ns_[k] = t;
        onset_jb_ns_[k] = t;
        onset_arrival_ns_[k] = 0;
      }
      ++voice_onsets_;
    }
    have_voiced_ = true;
    last_voiced_ns_ = t + static_cast<std::int64_t>(static_cast<double>(n) * ns_per_frame);
  }
  // The pulled frames leave the blocks.
  std::size_t left = frames;
  while (left != 0 && blocks_count_ != 0) {
    Block& b = blocks_[blocks_head_];
    const std::size_t take = std::min(left, b.frames - b.consumed);
    b.consumed += take;
    left -= take;
    if (b.consumed == b.frames) {
      blocks_head_ = (blocks_head_ + 1) % blocks_.size();
      --blocks_count_;
    }
  }
}

void Downlink::produce_opus(std::int64_t now_ns) {
  const PlayoutAction action = jitter_->pull(now_ns, decoded_.data());
  append(decoded_.data(), decode_frame_, action != PlayoutAction::Silence,
         jitter_->last_decoded_arrival_ns(), now_ns);
}

void Downlink::produce_pcm(std::int64_t now_ns) {
  const std::size_t ch = static_cast<std::size_t>(config_.channels);
  const std::size_t available = pcm_ring_->available_frames();
  if (!pcm_playing_) {
    const std::size_t prebuffer =
        static_cast<std::size_t>(kPcmTransportRateHz / 1000 * config_.pcm_prebuffer_ms);
    pcm_playing_ = available >= std::max<std::size_t>(prebuffer, 1);
  }
  std::size_t got = 0;
  if (pcm_playing_) {
    got = pcm_ring_->read(pcm_in_.data(), std::min(available, decode_frame_));
    if (got < decode_frame_) {
      ++pcm_underruns_;
      pcm_playing_ = false;
    }
  }
  for (std::size_t i = 0; i < got * ch; ++i) {
    decoded_[i] = static_cast<float>(pcm_in_[i]) * (1.0f / 32768.0f);
  }
  std::fill(decoded_.begin() + static_cast<std::ptrdiff_t>(got * ch), decoded_.end(), 0.0f);
  append(decoded_.data(), decode_frame_, got == decode_frame_, 0, now_ns);
}

void Downlink::pull(float* out, std::size_t frames, std::int64_t now_ns) {
  const std::size_t ch = static_cast<std::size_t>(config_.channels);
  if (frames > static_cast<std::size_t>(config_.output_rate_hz)) {
    throw std::invalid_argument("pull: at most one second of audio per call");
  }
  const std::uint64_t requested = flush_requested_.load(std::memory_order_acquire);
  if (requested != flush_applied_) {
    flush_applied_ = requested;
    apply_flush();
  }
  if (jitter_) {
    for (const QueuedPacket* p = queue_.front(); p != nullptr; p = queue_.front()) {
      jitter_->insert(p->seq, p->timestamp, p->payload, p->bytes, p->arrival_ns);
      queue_.pop();
    }
  }
  const double ns_per_frame = 1e9 / config_.output_rate_hz;
  while (pending_frames_ < frames) {
    // The audio produced now is played after what is already pending.
    const std::int64_t at =
        now_ns + static_cast<std::int64_t>(static_cast<double>(pending_frames_) * ns_per_frame);
    if (jitter_) {
      produce_opus(at);
    } else {
      produce_pcm(at);
    }
  }
  std::memcpy(out, pending_.data(), frames * ch * sizeof(float));
  scan_output(out, frames, now_ns);
  const std::size_t media = std::min(pending_media_, frames);
  pending_media_ -= media;
  pending_frames_ -= frames;
  std::memmove(pending_.data(), pending_.data() + frames * ch,
               pending_frames_ * ch * sizeof(float));
  samples_pulled_ += frames;
  media_played_.fetch_add(media, std::memory_order_acq_rel);
  // The echo canceller's reference is exactly what the speaker gets; a full tap (no capture
  // running) drops and counts in the ring.
  if (SpscRing<float>* tap = tap_.load(std::memory_order_acquire)) tap->write(out, frames);
  publish();
}

void Downlink::publish() {
  DownlinkStats s;
  if (jitter_) s.jitter = jitter_->stats();
  s.packets_queued = queue_.pushed();
  s.packets_dropped_queue_full = queue_.dropped_full();
  s.packets_dropped_oversized = queue_.dropped_oversized();
  s.samples_pulled = samples_pulled_;
  s.media_samples_played = media_played_.load(std::memory_order_relaxed);
  s.flushes = flush_applied_;
  s.pcm_underruns = pcm_underruns_;
  s.voice_onsets = voice_onsets_;
  for (int k = 0; k < DownlinkStats::kOnsetHistory; ++k) {
    s.onset_play_ns[k] = onset_play_ns_[k];
    s.onset_block_play_ns[k] = onset_block_play_ns_[k];
    s.onset_jb_ns[k] = onset_jb_ns_[k];
    s.onset_arrival_ns[k] = onset_arrival_ns_[k];
  }
  s.last_voiced_ns = have_voiced_ ? last_voiced_ns_ : 0;
  s.output_energy = output_energy_;
  published_->store(s);
}

DownlinkStats Downlink::stats() const {
  DownlinkStats s = published_->load();
  // Producer-side counters are live.
  s.packets_queued = queue_.pushed();
  s.packets_dropped_queue_full = queue_.dropped_full();
  s.packets_dropped_oversized = queue_.dropped_oversized();
  return s;
}

// ------------------------------------------------------------------------------------------
// Drivers

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t clock_ns(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

void check_frame_ms(int frame_ms) {
  if (frame_ms < 5 || frame_ms > 100) {
    throw std::invalid_argument("frame_ms must be between 5 and 100, got " +
                                std::to_string(frame_ms));
  }
}

}  // namespace

PlayoutDriver::PlayoutDriver(Downlink& downlink, int frame_ms, std::size_t ring_frames)
    : downlink_(downlink),
      frame_ms_((check_frame_ms(frame_ms), frame_ms)),
      frame_frames_(static_cast<std::size_t>(downlink.config().output_rate_hz / 1000 * frame_ms)),
      ring_(pow2_at_least(std::max(ring_frames, frame_frames_ * 2)),
            static_cast<std::size_t>(downlink.config().channels)),
      buffer_(frame_frames_ * static_cast<std::size_t>(downlink.config().channels)) {
  if (downlink.config().output_rate_hz % 1000 != 0) {
    throw std::invalid_argument("the headless playout driver needs an output rate in whole kHz");
  }
}

PlayoutDriver::~PlayoutDriver() { stop(); }

void PlayoutDriver::start() {
  if (running_.exchange(true)) return;
  stop_.store(false, std::memory_order_release);
  thread_ = std::thread([this] { run(); });
}

void PlayoutDriver::stop() {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
  running_.store(false, std::memory_order_release);
}

void PlayoutDriver::run() {
  const auto period = std::chrono::milliseconds(frame_ms_);
  auto next = Clock::now();
  while (!stop_.load(std::memory_order_acquire)) {
    downlink_.pull(buffer_.data(), frame_frames_, clock_ns(next));
    ring_.write(buffer_.data(), frame_frames_);
    ticks_.fetch_add(1, std::memory_order_relaxed);
    next += period;
    const auto now = Clock::now();
    if (now > next + period) {
      // Starved for more than a frame: count it and keep the clock (the pulls catch up).
      late_ticks_.fetch_add(1, std::memory_order_relaxed);
    } else {
      std::this_thread::sleep_until(next);
    }
  }
}

CaptureDriver::CaptureDriver(Uplink& uplink, int frame_ms, std::size_t ring_frames,
                             bool pad_silence)
    : uplink_(uplink),
      frame_ms_((check_frame_ms(frame_ms), frame_ms)),
      frame_frames_(static_cast<std::size_t>(uplink.config().input_rate_hz) *
                    static_cast<std::size_t>(frame_ms) / 1000),
      pad_silence_(pad_silence),
      ring_(pow2_at_least(std::max(ring_frames, frame_frames_ * 2)),
            static_cast<std::size_t>(uplink.config().channels)),
      buffer_(frame_frames_ * static_cast<std::size_t>(uplink.config().channels)) {
  if (static_cast<long long>(uplink.config().input_rate_hz) * frame_ms % 1000 != 0) {
    throw std::invalid_argument("frame_ms is not a whole number of input samples");
  }
}

CaptureDriver::~CaptureDriver() { stop(); }

void CaptureDriver::start() {
  if (running_.exchange(true)) return;
  stop_.store(false, std::memory_order_release);
  thread_ = std::thread([this] { run(); });
}

void CaptureDriver::stop() {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
  running_.store(false, std::memory_order_release);
}

void CaptureDriver::run() {
  const auto period = std::chrono::milliseconds(frame_ms_);
  const std::size_t ch = static_cast<std::size_t>(uplink_.config().channels);
  auto next = Clock::now() + period;
  while (!stop_.load(std::memory_order_acquire)) {
    std::this_thread::sleep_until(next);
    next += period;
    const std::size_t got = std::min(ring_.available_frames(), frame_frames_);
    if (got != 0) ring_.read(buffer_.data(), got);
    std::size_t frames = got;
    if (pad_silence_ && got < frame_frames_) {
      std::fill(buffer_.begin() + static_cast<std::ptrdiff_t>(got * ch), buffer_.end(), 0.0f);
      silence_frames_.fetch_add(frame_frames_ - got, std::memory_order_relaxed);
      frames = frame_frames_;
    }
    if (frames != 0) uplink_.push(buffer_.data(), frames);
    ticks_.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace rtvoice
