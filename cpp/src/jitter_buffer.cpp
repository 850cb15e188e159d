#include "rtvoice/jitter_buffer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace rtvoice {
namespace {

// Relative arrival delay is measured against the earliest packet of this window.
constexpr double kWindowMs = 2000.0;
// The largest relative delay of each interval goes into the histogram.
constexpr double kIntervalMs = 500.0;
// Bucket width of the histogram. NetEq uses 20 ms because its buffer level is counted in
// packets; our delay is measured continuously and the target is aligned to the pull grid, so
// millisecond buckets let a quiet link play within a few ms of the earliest arrival.
constexpr double kBucketMs = 1.0;
constexpr double kForgetFactor = 0.983;
constexpr double kStartForgetWeight = 2.0;
constexpr double kQuantile = 0.95;
// Margin above the delay quantile (itself a bucket's upper edge) when aligning the target.
constexpr double kAlignMarginMs = 4.0;
// The start delay holds until this many intervals were measured (1.5 s), so the first bursts of
// a connection do not swing the target and the playout with it.
constexpr std::uint64_t kIntervalsBeforeAdapting = 3;
constexpr double kOutlierMarginMs = 100.0;
constexpr double kOutlierWeight = 0.25;
// Dead band around the target: no stretching while the delay is within it. It widens with the
// target (as NetEq's band between 3/4 of the target and the target plus a packet), since a
// high target means arrivals are noisy and chasing every ms would stretch all the time.
constexpr double kStretchMarginMs = 5.0;
constexpr double kStretchMarginFraction = 0.2;
constexpr double kStretchLowMarginMs = 2.0;
// Above this excess, up to three periods are cut per decoded packet.
constexpr double kFastAccelerateMs = 20.0;
// A sequence number this far from the highest seen starts a new stream.
constexpr std::int64_t kMaxSeqJump = 1000;
// The playout clock follows now_ns with this time constant (in pulls), and jumps to it when
// they differ by more than kClockSnapNs (a paused or restarted caller).
constexpr std::int64_t kClockCorrection = 16;
constexpr std::int64_t kClockSnapNs = 100'000'000;
constexpr std::size_t kArrivalCapacity = 1024;
// Missing-at-playout rate above which one extra frame is held for FEC (and below which it is
// released), when most packets carry FEC.
constexpr double kFecHoldLoss = 0.02;
constexpr double kFecReleaseLoss = 0.01;
constexpr double kLossEmaWeight = 1.0 / 32.0;
constexpr double kFecEmaWeight = 1.0 / 16.0;
// Longest packet duration accepted (RFC 6716's maximum).
constexpr int kMaxPacketMs = 120;

template <typename T>
T clamp_to(double v, T lo, T hi) {
  if (!(v > static_cast<double>(lo))) return lo;  // also NaN
  if (v >= static_cast<double>(hi)) return hi;
  return static_cast<T>(v);
}

}  // namespace

const char* playout_action_name(PlayoutAction action) {
  switch (action) {
    case PlayoutAction::Conceal:
      return "conceal";
    case PlayoutAction::Fec:
      return "fec";
    case PlayoutAction::ComfortNoise:
      return "comfort_noise";
    case PlayoutAction::Accelerate:
      return "accelerate";
    case PlayoutAction::Expand:
      return "expand";
    case PlayoutAction::Normal:
      return "normal";
    case PlayoutAction::Silence:
      return "silence";
  }
  return "unknown";
}

const char* insert_result_name(InsertResult result) {
  switch (result) {
    case InsertResult::Buffered:
      return "buffered";
    case InsertResult::Duplicate:
      return "duplicate";
    case InsertResult::Late:
      return "late";
    case InsertResult::Invalid:
      return "invalid";
    case InsertResult::Oversized:
      return "oversized";
  }
  return "unknown";
}

JitterBuffer::JitterBuffer(std::unique_ptr<AudioDecoder> decoder, const JitterBufferConfig& config)
    : decoder_(std::move(decoder)),
      config_(config),
      rate_hz_(decoder_ ? decoder_->sample_rate_hz() : 0),
      channels_(decoder_ ? decoder_->channels() : 0),
      stretcher_(decoder_ ? decoder_->sample_rate_hz() : 48000,
                 decoder_ ? decoder_->channels() : 1) {
  if (!decoder_) throw std::invalid_argument("JitterBuffer needs a decoder");
  if (config.frame_ms != 10 && config.frame_ms != 20) {
    throw std::invalid_argument("frame_ms must be 10 or 20, got " +
                                std::to_string(config.frame_ms));
  }
  if (config.min_delay_ms < 0 || config.min_delay_ms > 5000) {
    throw std::invalid_argument("min_delay_ms must be 0..5000, got " +
                                std::to_string(config.min_delay_ms));
  }
  if (config.max_delay_ms < config.min_delay_ms || config.max_delay_ms < config.frame_ms ||
      config.max_delay_ms > 10000) {
    throw std::invalid_argument(
        "max_delay_ms must be >= min_delay_ms and frame_ms and <= 10000, got " +
        std::to_string(config.max_delay_ms));
  }
  if (config.start_delay_ms < config.min_delay_ms || config.start_delay_ms > config.max_delay_ms) {
    throw std::invalid_argument(
        "start_delay_ms must lie within [min_delay_ms, max_delay_ms], got " +
        std::to_string(config.start_delay_ms));
  }
  if (config.capacity_packets < 2 || config.capacity_packets > 4096) {
    throw std::invalid_argument("capacity_packets must be 2..4096, got " +
                                std::to_string(config.capacity_packets));
  }
  if (config.max_payload_bytes < 3 || config.max_payload_bytes > 65536) {
    throw std::invalid_argument("max_payload_bytes must be 3..65536, got " +
                                std::to_string(config.max_payload_bytes));
  }
  const int rtp_hz = decoder_->rtp_clock_hz();
  if (rtp_hz < rate_hz_ || rtp_hz % rate_hz_ != 0) {
    throw std::invalid_argument("the decoder's RTP clock must be a multiple of its sample rate");
  }
  ts_per_sample_ = rtp_hz / rate_hz_;
  frame_samples_ = rate_hz_ / 1000 * config.frame_ms;
  max_payload_ = static_cast<std::size_t>(config.max_payload_bytes);
  max_packet_samples_ = rate_hz_ / 1000 * kMaxPacketMs;

  slots_.assign(static_cast<std::size_t>(config.capacity_packets), Slot{});
  payloads_.assign(slots_.size() * max_payload_, 0);
  arrivals_.assign(kArrivalCapacity, Arrival{0.0, 0.0});
  histogram_.assign(static_cast<std::size_t>(config.max_delay_ms / kBucketMs) + 2, 0.0);

  history_ = stretcher_.history_samples();
  // History, less than a frame unplayed, then at most one packet, a stretch period and a frame
  // of comfort noise or concealment on top.
  sync_capacity_ = history_ + static_cast<std::size_t>(2 * frame_samples_ + max_packet_samples_) +
                   stretcher_.max_period_samples() + static_cast<std::size_t>(frame_samples_);
  sync_.assign(sync_capacity_ * static_cast<std::size_t>(channels_), 0.0f);
  head_ = end_ = history_;
}

// ---------------------------------------------------------------- packet buffer

int JitterBuffer::find_slot(std::int64_t ts) const {
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].used && slots_[i].ts == ts) return static_cast<int>(i);
  }
  return -1;
}

int JitterBuffer::oldest_slot() const {
  int best = -1;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].used && (best < 0 || slots_[i].ts < slots_[static_cast<std::size_t>(best)].ts)) {
      best = static_cast<int>(i);
    }
  }
  return best;
}

int JitterBuffer::next_slot() const { return oldest_slot(); }

void JitterBuffer::free_slot(int index) {
  Slot& s = slots_[static_cast<std::size_t>(index)];
  if (s.used) {
    s.used = false;
    --used_slots_;
  }
}

void JitterBuffer::clear_packets() {
  for (Slot& s : slots_) s.used = false;
  used_slots_ = 0;
}

std::int64_t JitterBuffer::buffered_span_ts() const {
  if (used_slots_ == 0) return 0;
  std::int64_t lo = std::numeric_limits<std::int64_t>::max();
  std::int64_t hi = std::numeric_limits<std::int64_t>::min();
  for (const Slot& s : slots_) {
    if (!s.used) continue;
    lo = std::min(lo, s.ts);
    hi = std::max(hi, s.ts + static_cast<std::int64_t>(s.samples) * ts_per_sample_);
  }
  if (state_ == State::Playing) lo = std::min(lo, expected_ts_);
  return hi - lo;
}

// ---------------------------------------------------------------- sequence numbers

bool JitterBuffer::seen(std::int64_t seq) const {
  const std::uint64_t bit = static_cast<std::uint64_t>(seq) % kSeqWindow;
  return (seq_bits_[bit / 64] >> (bit % 64)) & 1u;
}

void JitterBuffer::mark_seen(std::int64_t seq) {
  const std::uint64_t bit = static_cast<std::uint64_t>(seq) % kSeqWindow;
  seq_bits_[bit / 64] |= std::uint64_t{1} << (bit % 64);
}

void JitterBuffer::start_stream(std::uint16_t seq, std::uint32_t ts) {
  have_stream_ = true;
  // Offsets keep unwrapped values positive whichever way the stream wraps.
  highest_seq_ = (std::int64_t{1} << 32) + seq;
  first_seq_ = highest_seq_;
  highest_ts_ = (std::int64_t{1} << 40) + ts;
  unique_received_ = 0;
  std::memset(seq_bits_, 0, sizeof(seq_bits_));
}

// ---------------------------------------------------------------- insert

InsertResult JitterBuffer::insert(std::uint16_t seq, std::uint32_t timestamp,
                                  const std::uint8_t* payload, std::size_t bytes,
                                  std::int64_t arrival_ns) {
  if (payload == nullptr || bytes == 0) {
    ++stats_.packets_invalid;
    return InsertResult::Invalid;
  }
  if (bytes > max_payload_) {
    ++stats_.packets_oversized;
    return InsertResult::Oversized;
  }
  const int samples = decoder_->packet_samples(payload, bytes);
  if (samples <= 0 || samples > max_packet_samples_) {
    ++stats_.packets_invalid;
    return InsertResult::Invalid;
  }
  ++stats_.packets_received;

  if (!have_stream_) start_stream(seq, timestamp);
  std::int64_t seq64 = highest_seq_ + static_cast<std::int16_t>(static_cast<std::uint16_t>(
                                          seq - static_cast<std::uint16_t>(highest_seq_)));
  std::int64_t ts64 = highest_ts_ + static_cast<std::int32_t>(static_cast<std::uint32_t>(
                                        timestamp - static_cast<std::uint32_t>(highest_ts_)));
  if (seq64 - highest_seq_ > kMaxSeqJump || highest_seq_ - seq64 > kMaxSeqJump) {
    reset();
    start_stream(seq, timestamp);
    seq64 = highest_seq_;
    ts64 = highest_ts_;
  }

  if (seq64 <= highest_seq_ - kSeqWindow) {
    ++stats_.packets_late;
    return InsertResult::Late;
  }
  const bool in_order = seq64 > highest_seq_ || unique_received_ == 0;
  if (seq64 > highest_seq_) {
    // Forget the marks the window slides over.
    const std::int64_t advance = seq64 - highest_seq_;
    if (advance >= kSeqWindow) {
      std::memset(seq_bits_, 0, sizeof(seq_bits_));
    } else {
      for (std::int64_t s = highest_seq_ + 1; s <= seq64; ++s) {
        const std::uint64_t bit = static_cast<std::uint64_t>(s) % kSeqWindow;
        seq_bits_[bit / 64] &= ~(std::uint64_t{1} << (bit % 64));
      }
    }
    highest_seq_ = seq64;
  } else if (seen(seq64)) {
    ++stats_.packets_duplicated;
    return InsertResult::Duplicate;
  }
  mark_seen(seq64);
  ++unique_received_;
  if (ts64 > highest_ts_) highest_ts_ = ts64;

  update_delay(ts64, arrival_ns, in_order);
  if (bytes > 2) {
    const double has_fec = decoder_->packet_has_fec(payload, bytes) ? 1.0 : 0.0;
    fec_ema_ += (has_fec - fec_ema_) * kFecEmaWeight;
  }

  if (have_timeline_ && ts64 < expected_ts_) {
    ++stats_.packets_late;
    return InsertResult::Late;
  }
  if (find_slot(ts64) >= 0) {
    ++stats_.packets_duplicated;
    return InsertResult::Duplicate;
  }
  if (used_slots_ == static_cast<int>(slots_.size())) {
    // Full: the oldest packet goes, whichever it is.
    const int oldest = oldest_slot();
    ++stats_.packets_discarded;
    if (slots_[static_cast<std::size_t>(oldest)].ts > ts64) return InsertResult::Late;
    free_slot(oldest);
  }
  int index = 0;
  while (slots_[static_cast<std::size_t>(index)].used) ++index;
  Slot& s = slots_[static_cast<std::size_t>(index)];
  s.used = true;
  s.ts = ts64;
  s.seq = seq64;
  s.arrival_ns = arrival_ns;
  s.samples = samples;
  s.bytes = static_cast<std::uint32_t>(bytes);
  std::memcpy(this->payload(index), payload, bytes);
  if (used_slots_ == 0 && state_ == State::Idle) first_arrival_ns_ = arrival_ns;
  ++used_slots_;
  return InsertResult::Buffered;
}

// ---------------------------------------------------------------- delay estimation

void JitterBuffer::update_delay(std::int64_t ts, std::int64_t arrival_ns, bool in_order) {
  if (!have_origin_) {
    have_origin_ = true;
    origin_arrival_ns_ = arrival_ns;
    origin_ts_ = ts;
  }
  const double arrival_ms = static_cast<double>(arrival_ns - origin_arrival_ns_) * 1e-6;
  const double media_ms =
      static_cast<double>(ts - origin_ts_) * 1000.0 / static_cast<double>(decoder_->rtp_clock_hz());
  const double offset_ms = arrival_ms - media_ms;

  if (in_order) {
    if (have_last_arrival_) {
      const double d = std::fabs(offset_ms - last_transit_ms_);
      jitter_ms_ += (std::min(d, 1e6) - jitter_ms_) / 16.0;
    }
    have_last_arrival_ = true;
    last_transit_ms_ = offset_ms;
  }

  // Append, then drop what fell out of the window (always keeping the newest).
  const std::size_t cap = arrivals_.size();
  if (arrivals_count_ == cap) {
    arrivals_head_ = (arrivals_head_ + 1) % cap;
    --arrivals_count_;
  }
  arrivals_[(arrivals_head_ + arrivals_count_) % cap] = Arrival{arrival_ms, offset_ms};
  ++arrivals_count_;
  while (arrivals_count_ > 1 && arrivals_[arrivals_head_].arrival_ms < arrival_ms - kWindowMs) {
    arrivals_head_ = (arrivals_head_ + 1) % cap;
    --arrivals_count_;
  }
  double base = offset_ms;
  for (std::size_t i = 0; i < arrivals_count_; ++i) {
    base = std::min(base, arrivals_[(arrivals_head_ + i) % cap].offset_ms);
  }
  last_base_ms_ = base;
  const double relative_ms = offset_ms - base;

  if (!interval_open_) {
    interval_open_ = true;
    interval_start_ms_ = arrival_ms;
    interval_max_ms_ = relative_ms;
  } else if (arrival_ms - interval_start_ms_ >= kIntervalMs || arrival_ms < interval_start_ms_) {
    add_to_histogram(interval_max_ms_);
    interval_start_ms_ = arrival_ms;
    interval_max_ms_ = relative_ms;
  } else {
    interval_max_ms_ = std::max(interval_max_ms_, relative_ms);
  }
}

void JitterBuffer::add_to_histogram(double delay_ms) {
  ++histogram_adds_;
  // Early intervals weigh more so the estimate settles within seconds, then the memory
  // lengthens to kForgetFactor per interval (NetEq's start_forget_weight).
  const double forget = std::clamp(
      1.0 - kStartForgetWeight / static_cast<double>(histogram_adds_ + 1), 0.0, kForgetFactor);
  double weight = 1.0 - forget;
  // A lone stall must not set the target for the next minute: the hold-and-accelerate path
  // absorbs it. Spikes far above the current estimate count a quarter, so only stalls in a
  // fifth or more of the intervals raise the target to cover them.
  if (histogram_adds_ > 1 && delay_ms > quantile_delay_ms_ + kOutlierMarginMs) {
    weight *= kOutlierWeight;
  }
  const std::size_t bucket = clamp_to<std::size_t>(delay_ms / kBucketMs, 0, histogram_.size() - 1);
  for (double& h : histogram_) h *= 1.0 - weight;
  histogram_[bucket] += weight;
  double cumulative = 0.0;
  std::size_t q = histogram_.size() - 1;
  for (std::size_t b = 0; b < histogram_.size(); ++b) {
    cumulative += histogram_[b];
    if (cumulative >= kQuantile) {
      q = b;
      break;
    }
  }
  quantile_delay_ms_ = static_cast<double>(q + 1) * kBucketMs;
}

double JitterBuffer::target_delay_ms() const {
  double target = 0.0;
  if (histogram_adds_ < kIntervalsBeforeAdapting) {
    target = config_.start_delay_ms;
  } else if (!have_phase_) {
    // A packet must arrive up to a frame before its first sample plays (decode granularity).
    target = quantile_delay_ms_ + config_.frame_ms;
  } else {
    // The smallest delay at or above the quantile whose frame grid lines up with the pulls: a
    // packet is then decoded at the pull where its first sample plays, and the frame of
    // decode granularity costs nothing.
    const double q = quantile_delay_ms_ + kAlignMarginMs;
    const double frame = config_.frame_ms;
    target = align_phase_ms_ + frame * std::ceil((q - align_phase_ms_) / frame);
  }
  target = std::clamp(target, static_cast<double>(config_.min_delay_ms),
                      static_cast<double>(config_.max_delay_ms));
  if (fec_frame_held_) {
    target = std::min(target + config_.frame_ms, static_cast<double>(config_.max_delay_ms));
  }
  return target;
}

std::int64_t JitterBuffer::head_timestamp() const {
  const std::int64_t filler =
      std::min<std::int64_t>(held_samples_, static_cast<std::int64_t>(unplayed()));
  const std::int64_t media_unplayed = static_cast<std::int64_t>(unplayed()) - filler;
  return expected_ts_ - media_unplayed * ts_per_sample_;
}

double JitterBuffer::playout_delay_ms(std::int64_t now_ns) const {
  if (!have_origin_ || state_ != State::Playing) return 0.0;
  const double now_ms = static_cast<double>(now_ns - origin_arrival_ns_) * 1e-6;
  const std::int64_t head_ts = head_timestamp();
  const double head_ms = static_cast<double>(head_ts - origin_ts_) * 1000.0 /
                         static_cast<double>(decoder_->rtp_clock_hz());
  return now_ms - last_base_ms_ - head_ms;
}

void JitterBuffer::note_frame(bool missing) {
  loss_ema_ += ((missing ? 1.0 : 0.0) - loss_ema_) * kLossEmaWeight;
  if (!config_.fec) {
    fec_frame_held_ = false;
  } else if (!fec_frame_held_ && loss_ema_ > kFecHoldLoss && fec_ema_ > 0.5) {
    fec_frame_held_ = true;
  } else if (fec_frame_held_ && (loss_ema_ < kFecReleaseLoss || fec_ema_ < 0.3)) {
    fec_frame_held_ = false;
  }
}

// ---------------------------------------------------------------- playout

std::int64_t JitterBuffer::playout_clock(std::int64_t now_ns) {
  // Pulls consume exactly one frame each, so playout time advances by a frame per pull; now_ns
  // only disciplines that clock. Callers woken by a loaded scheduler pull a few ms early or
  // late, and reading now_ns raw would turn that into delay noise and needless stretching.
  const std::int64_t frame_ns = static_cast<std::int64_t>(config_.frame_ms) * 1000000;
  const std::int64_t predicted = clock_ns_ + frame_ns;
  const std::int64_t error = now_ns - predicted;
  if (!have_clock_ || error > kClockSnapNs || error < -kClockSnapNs) {
    have_clock_ = true;
    clock_ns_ = now_ns;
  } else {
    clock_ns_ = predicted + error / kClockCorrection;
  }
  return clock_ns_;
}

PlayoutAction JitterBuffer::pull(std::int64_t now_ns_raw, float* out) {
  const std::int64_t now_ns = playout_clock(now_ns_raw);
  action_ = state_ == State::Playing ? PlayoutAction::Normal : PlayoutAction::Silence;
  const std::size_t frame = static_cast<std::size_t>(frame_samples_);
  // Each produce() appends at least one sample unless the sync buffer is full; the bound only
  // guards against a decoder that returns nothing.
  for (int i = 0; i < 16 && unplayed() < frame; ++i) produce(now_ns);
  if (unplayed() < frame) append_silence(static_cast<int>(frame - unplayed()));
  // The head sample starts playing now.
  last_delay_ms_ = playout_delay_ms(now_ns);
  if (dry_samples_ == 0) shown_delay_ms_ = last_delay_ms_;
  if (state_ == State::Playing) {
    // Delay minus the media left over after this pull: invariant under stretching and holds
    // (mod a frame), it fixes which delays line the frame grid up with the pulls.
    const std::size_t filler =
        std::min<std::size_t>(static_cast<std::size_t>(held_samples_), unplayed());
    const double residual_ms =
        (static_cast<double>(unplayed() - filler) - static_cast<double>(frame)) * 1000.0 / rate_hz_;
    const double frame_ms = config_.frame_ms;
    align_phase_ms_ = std::fmod(last_delay_ms_ - residual_ms, frame_ms);
    if (align_phase_ms_ < 0) align_phase_ms_ += frame_ms;
    have_phase_ = std::isfinite(align_phase_ms_);
    if (!have_phase_) align_phase_ms_ = 0.0;
  }
  // Samples added by stretching stand for no media; right after the start that would put the
  // head before the first packet.
  last_head_ts_ = std::max(head_timestamp(), play_start_ts_);
  const std::size_t values = frame * static_cast<std::size_t>(channels_);
  std::memcpy(out, sync_at(head_), values * sizeof(float));
  head_ += frame;
  stats_.samples_played += frame;
  compact();
  return action_;
}

namespace {
void raise(PlayoutAction& current, PlayoutAction a) {
  if (static_cast<int>(a) < static_cast<int>(current)) current = a;
}
}  // namespace

void JitterBuffer::produce(std::int64_t now_ns) {
  const std::size_t frame = static_cast<std::size_t>(frame_samples_);
  if (state_ == State::Idle) {
    const double target_ms = target_delay_ms();
    const bool waited = static_cast<double>(now_ns - first_arrival_ns_) * 1e-6 >= target_ms;
    const bool filled = static_cast<double>(buffered_span_ts()) * 1000.0 /
                            static_cast<double>(decoder_->rtp_clock_hz()) >=
                        target_ms;
    if (used_slots_ == 0 || (!waited && !filled)) {
      append_silence(static_cast<int>(frame - unplayed()));
      raise(action_, PlayoutAction::Silence);
      return;
    }
    state_ = State::Playing;
    have_timeline_ = true;
    // Unplayed silence left from waiting is not media; the stream starts right at the head.
    end_ = head_;
    expected_ts_ = slots_[static_cast<std::size_t>(oldest_slot())].ts;
    play_start_ts_ = expected_ts_;
    held_samples_ = 0;
    dry_samples_ = 0;
    comfort_ = false;
  }

  // Packets overtaken by concealment can no longer play.
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].used && slots_[i].ts < expected_ts_) {
      free_slot(static_cast<int>(i));
      ++stats_.packets_late;
    }
  }

  const int index = next_slot();
  if (index < 0) {
    // Nothing buffered: the next packet is late, lost, or the sender is silent (DTX). Fill
    // without advancing the media timeline while the delay may still grow, so a late packet
    // still plays; the filler is matched against the gap once the next packet shows.
    const bool hold = playout_delay_ms(now_ns) + config_.frame_ms <= config_.max_delay_ms;
    conceal(frame_samples_, !hold, comfort_, true);
    if (hold) held_samples_ += frame_samples_;
    dry_samples_ += frame_samples_;
    if (!comfort_ &&
        dry_samples_ * 1000 >= static_cast<std::int64_t>(config_.max_delay_ms) * rate_hz_) {
      // Nothing came for longer than we may wait: the stream stopped. Start afresh on the next
      // packet.
      state_ = State::Idle;
      held_samples_ = 0;
      concealing_ = false;
      settle_tail(false);
    }
    return;
  }
  settle_tail(true);

  Slot& slot = slots_[static_cast<std::size_t>(index)];
  std::int64_t gap = slot.ts - expected_ts_;
  if (gap > 0 && held_samples_ > 0) {
    // The filler played while waiting stands for (part of) the gap; filler beyond the gap has
    // become extra delay.
    const std::int64_t absorb = std::min(gap, held_samples_ * ts_per_sample_);
    expected_ts_ += absorb;
    gap -= absorb;
  }
  held_samples_ = 0;
  dry_samples_ = 0;
  if (gap == 0) {
    decode_slot(index, now_ns);
    return;
  }
  if (gap > static_cast<std::int64_t>(config_.max_delay_ms) * decoder_->rtp_clock_hz() / 1000) {
    // A jump forward longer than any delay we keep: resume at the packet.
    expected_ts_ = slot.ts;
    decode_slot(index, now_ns);
    return;
  }
  const std::int64_t gap_samples = std::max<std::int64_t>(1, gap / ts_per_sample_);
  const std::uint8_t* data = payload(index);
  const bool fec_possible = config_.fec && !comfort_ && decoder_->packet_has_fec(data, slot.bytes);
  if (fec_possible && gap_samples <= slot.samples) {
    const std::size_t room = sync_capacity_ - end_;
    if (static_cast<std::size_t>(gap_samples) <= room) {
      const int n =
          decoder_->decode_fec(data, slot.bytes, sync_at(end_), static_cast<int>(gap_samples));
      if (n > 0) {
        end_ += static_cast<std::size_t>(n);
        expected_ts_ = slot.ts;
        ++stats_.fec_recovered_frames;
        stats_.fec_recovered_samples += static_cast<std::uint64_t>(n);
        concealing_ = false;
        note_frame(true);
        raise(action_, PlayoutAction::Fec);
        return;
      }
    }
  }
  // Conceal the gap a frame at a time; with FEC at hand, only up to the frame it recovers.
  std::int64_t n = fec_possible ? gap_samples - slot.samples : gap_samples;
  n = std::clamp<std::int64_t>(n, 1, frame_samples_);
  conceal(static_cast<int>(n), true, comfort_);
}

void JitterBuffer::decode_slot(int index, std::int64_t now_ns) {
  Slot& slot = slots_[static_cast<std::size_t>(index)];
  const std::size_t room = sync_capacity_ - end_;
  const bool dtx = slot.bytes <= 2;
  const int n = decoder_->decode(
      payload(index), slot.bytes, sync_at(end_),
      static_cast<int>(std::min<std::size_t>(room, static_cast<std::size_t>(max_packet_samples_))));
  const int samples = slot.samples;
  decoded_arrival_ns_ = slot.arrival_ns;
  free_slot(index);
  if (n <= 0) {
    ++stats_.decode_errors;
    conceal(std::min(samples, frame_samples_), true, false);
    expected_ts_ +=
        static_cast<std::int64_t>(samples - std::min(samples, frame_samples_)) * ts_per_sample_;
    return;
  }
  end_ += static_cast<std::size_t>(n);
  expected_ts_ += static_cast<std::int64_t>(samples) * ts_per_sample_;
  if (dtx) {
    comfort_ = true;
    stats_.comfort_noise_samples += static_cast<std::uint64_t>(n);
    raise(action_, PlayoutAction::ComfortNoise);
  } else {
    comfort_ = false;
    raise(action_, PlayoutAction::Normal);
  }
  concealing_ = false;
  note_frame(false);
  stretch(now_ns, dtx);
}

void JitterBuffer::settle_tail(bool stream_went_on) {
  if (dry_concealed_ == 0) return;
  if (stream_went_on) {
    stats_.concealed_samples += dry_concealed_;
    if (dry_event_) ++stats_.concealment_events;
  } else {
    stats_.tail_concealed_samples += dry_concealed_;
  }
  dry_concealed_ = 0;
  dry_event_ = false;
}

void JitterBuffer::conceal(int samples, bool advance, bool comfort, bool dry) {
  const std::size_t room = sync_capacity_ - end_;
  const int n = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(samples), room));
  if (n <= 0) return;
  const int got = decoder_->conceal(sync_at(end_), n);
  if (got != n)
    std::memset(sync_at(end_), 0, static_cast<std::size_t>(n * channels_) * sizeof(float));
  end_ += static_cast<std::size_t>(n);
  if (advance) expected_ts_ += static_cast<std::int64_t>(n) * ts_per_sample_;
  if (comfort) {
    stats_.comfort_noise_samples += static_cast<std::uint64_t>(n);
    raise(action_, PlayoutAction::ComfortNoise);
  } else {
    if (dry) {
      dry_concealed_ += static_cast<std::uint64_t>(n);
      if (!concealing_) dry_event_ = true;
    } else {
      stats_.concealed_samples += static_cast<std::uint64_t>(n);
      if (!concealing_) ++stats_.concealment_events;
    }
    concealing_ = true;
    note_frame(true);
    raise(action_, PlayoutAction::Conceal);
  }
}

void JitterBuffer::stretch(std::int64_t now_ns, bool comfort) {
  const double target = target_delay_ms();
  const double samples_per_ms = rate_hz_ / 1000.0;
  // Above the target the band is wide; below it narrow, because there the slack for late
  // packets is being eaten into.
  const double margin_samples =
      std::max(kStretchMarginMs, kStretchMarginFraction * target) * samples_per_ms;
  const double low_margin_samples = kStretchLowMarginMs * samples_per_ms;
  for (int round = 0; round < 3; ++round) {
    const double excess = (playout_delay_ms(now_ns) - target) * samples_per_ms;
    if (excess > margin_samples) {
      std::size_t removed = 0;
      if (comfort) {
        // Comfort noise is shortened freely, keeping a frame's worth.
        const std::size_t keep = static_cast<std::size_t>(frame_samples_);
        const std::size_t spare = unplayed() > keep ? unplayed() - keep : 0;
        removed = std::min(spare, clamp_to<std::size_t>(excess, 0, spare));
        end_ -= removed;
      } else {
        // Only cut from what this pull does not need, plus the next packet if it is already
        // here: cutting deeper would leave the pull waiting for a packet still in flight.
        const std::size_t frame = static_cast<std::size_t>(frame_samples_);
        std::size_t surplus = unplayed() > frame ? unplayed() - frame : 0;
        const int next = next_slot();
        if (next >= 0 && slots_[static_cast<std::size_t>(next)].ts == expected_ts_) {
          surplus += static_cast<std::size_t>(slots_[static_cast<std::size_t>(next)].samples);
        }
        removed = stretcher_.accelerate(
            sync_.data(), head_, end_,
            std::min(surplus, clamp_to<std::size_t>(excess + low_margin_samples, 0, 1 << 20)));
        end_ -= removed;
      }
      if (removed == 0) return;
      stats_.accelerated_samples += removed;
      raise(action_, PlayoutAction::Accelerate);
      if (excess < kFastAccelerateMs * samples_per_ms) return;
    } else if (-excess > low_margin_samples) {
      std::size_t added = 0;
      if (comfort) {
        const int n = std::min(frame_samples_, clamp_to<int>(-excess, 0, frame_samples_));
        const std::size_t before = end_;
        conceal(n, false, true);
        added = end_ - before;
        stats_.comfort_noise_samples -= added;  // counted as expansion instead
      } else {
        added = stretcher_.expand(sync_.data(), head_, end_, sync_capacity_,
                                  clamp_to<std::size_t>(-excess + margin_samples, 0, 1 << 20));
        end_ += added;
      }
      if (added > 0) {
        stats_.expanded_samples += added;
        raise(action_, PlayoutAction::Expand);
      }
      return;
    } else {
      return;
    }
  }
}

void JitterBuffer::append_silence(int samples) {
  const std::size_t room = sync_capacity_ - end_;
  const std::size_t n = std::min<std::size_t>(static_cast<std::size_t>(std::max(samples, 0)), room);
  std::memset(sync_at(end_), 0, n * static_cast<std::size_t>(channels_) * sizeof(float));
  end_ += n;
  stats_.silence_samples += n;
}

void JitterBuffer::compact() {
  if (head_ <= history_) return;
  const std::size_t shift = head_ - history_;
  const std::size_t ch = static_cast<std::size_t>(channels_);
  std::memmove(sync_.data(), sync_.data() + shift * ch, (end_ - shift) * ch * sizeof(float));
  head_ -= shift;
  end_ -= shift;
}

void JitterBuffer::flush() {
  settle_tail(false);  // cut off: what was concealed since the last packet was its tail
  clear_packets();
  end_ = head_;
  held_samples_ = 0;
  dry_samples_ = 0;
  concealing_ = false;
  comfort_ = false;
  state_ = State::Idle;
  // Whatever was sent before the flush stays unplayable.
  if (have_stream_) {
    expected_ts_ = std::max(expected_ts_, highest_ts_ + 1);
    have_timeline_ = true;
  }
}

void JitterBuffer::reset() {
  if (have_stream_) {
    const std::int64_t expected = highest_seq_ - first_seq_ + 1;
    lost_before_reset_ += static_cast<std::uint64_t>(
        std::max<std::int64_t>(0, expected - static_cast<std::int64_t>(unique_received_)));
  }
  flush();
  have_stream_ = false;
  have_timeline_ = false;
  unique_received_ = 0;
  have_origin_ = false;
  arrivals_count_ = 0;
  arrivals_head_ = 0;
  interval_open_ = false;
  have_last_arrival_ = false;
  decoder_->reset();
  ++stats_.stream_resets;
}

JitterBufferStats JitterBuffer::stats() const {
  JitterBufferStats s = stats_;
  s.packets_lost = lost_before_reset_;
  if (have_stream_) {
    const std::int64_t expected = highest_seq_ - first_seq_ + 1;
    s.packets_lost += static_cast<std::uint64_t>(
        std::max<std::int64_t>(0, expected - static_cast<std::int64_t>(unique_received_)));
  }
  s.target_delay_ms = target_delay_ms();
  s.current_delay_ms = state_ == State::Playing ? shown_delay_ms_ : 0.0;
  s.has_playout_timestamp = state_ == State::Playing;
  s.playout_timestamp = s.has_playout_timestamp ? static_cast<std::uint32_t>(last_head_ts_) : 0;
  s.jitter_ms = jitter_ms_;
  s.buffered_packets = static_cast<std::uint32_t>(used_slots_);
  const double media_ms = static_cast<double>(buffered_span_ts()) * 1000.0 /
                          static_cast<double>(decoder_->rtp_clock_hz());
  s.buffered_ms = media_ms + static_cast<double>(unplayed()) * 1000.0 / rate_hz_;
  s.loss_rate = loss_ema_;
  return s;
}

}  // namespace rtvoice
