// Adaptive jitter buffer of the receive path (NetEq-class): reorders, deduplicates and drops
// late RTP payloads, adapts its target delay to the measured arrival jitter, and every pull
// plays exactly one output frame: a normal decode, an FEC recovery of a missing frame from the
// next payload, a concealment, comfort noise, or a decode time-stretched by one pitch period to
// converge to the target delay.
//
// Threading: insert(), pull(), flush() and reset() belong to the playout side alone (one thread,
// or calls serialised by the owner); the network side hands packets over through an SPSC queue
// (the Downlink). stats() and the accessors read plain fields and must be called on that same
// thread. No method locks, waits or allocates after construction; time is injected as
// nanoseconds on one monotonic clock shared by arrival_ns and now_ns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "rtvoice/audio_decoder.hpp"
#include "rtvoice/time_stretch.hpp"

namespace rtvoice {

struct JitterBufferConfig {
  int frame_ms = 20;           // duration of one pull
  int min_delay_ms = 10;       // bounds of the target delay
  int max_delay_ms = 500;      // also the most the delay may grow while waiting for late audio
  int start_delay_ms = 60;     // target before any jitter was measured
  int capacity_packets = 128;  // packet slots, preallocated
  int max_payload_bytes = 1500;
  bool fec = true;  // recover a missing frame from the next payload's redundancy
};

// What one pull did; when several things happened, the first of this list that applies.
enum class PlayoutAction : std::uint8_t {
  Conceal,       // a missing frame was concealed
  Fec,           // a missing frame was recovered from the next payload's FEC
  ComfortNoise,  // DTX: the sender is silent on purpose
  Accelerate,    // a pitch period was removed to lower the delay
  Expand,        // a pitch period was repeated to raise the delay
  Normal,        // plain decode
  Silence,       // nothing to play: before the stream starts or after it stopped
};
const char* playout_action_name(PlayoutAction action);

enum class InsertResult : std::uint8_t {
  Buffered,
  Duplicate,
  Late,       // its playout time has passed
  Invalid,    // empty, or not a valid payload of the codec, or longer than 120 ms
  Oversized,  // over max_payload_bytes
};
const char* insert_result_name(InsertResult result);

// Counters are cumulative since construction; the *_ms fields are current values.
struct JitterBufferStats {
  std::uint64_t packets_received = 0;    // valid payloads handed to insert (with duplicates)
  std::uint64_t packets_lost = 0;        // sequence numbers never received (RTP definition)
  std::uint64_t packets_late = 0;        // arrived after their playout time, dropped
  std::uint64_t packets_duplicated = 0;  // dropped as duplicates
  std::uint64_t packets_discarded = 0;   // dropped because the buffer overflowed
  std::uint64_t packets_invalid = 0;     // rejected: empty or malformed
  std::uint64_t packets_oversized = 0;   // rejected: over max_payload_bytes
  std::uint64_t decode_errors = 0;       // decoder refused a payload (concealed instead)
  std::uint64_t stream_resets = 0;       // sequence jumps taken as a new stream, and reset()
  std::uint64_t samples_played = 0;      // samples per channel output by pull
  // Concealment of missing media: a gap the stream went on after. Concealment played while
  // nothing was buffered is held back until the stream shows whether it goes on (then it counts
  // here) or has ended (then it was the fade-out of a talkspurt: tail_concealed_samples).
  std::uint64_t concealed_samples = 0;
  std::uint64_t concealment_events = 0;
  std::uint64_t tail_concealed_samples = 0;
  std::uint64_t fec_recovered_frames = 0;
  std::uint64_t fec_recovered_samples = 0;
  std::uint64_t comfort_noise_samples = 0;
  std::uint64_t silence_samples = 0;
  std::uint64_t accelerated_samples = 0;  // removed by time stretching
  std::uint64_t expanded_samples = 0;     // added by time stretching
  // Playout point behind the earliest-arrival line. While nothing is buffered and the buffer
  // holds for a late packet or the end of a talkspurt, it stays at its value before the hold:
  // the hold is classified once the stream shows whether it goes on (as concealment is).
  double current_delay_ms = 0.0;
  double target_delay_ms = 0.0;
  double jitter_ms = 0.0;    // RFC 3550 interarrival jitter
  double buffered_ms = 0.0;  // media held: unplayed decoded audio plus buffered packets
  std::uint32_t buffered_packets = 0;
  double loss_rate = 0.0;  // recent fraction of frames missing at playout
  // RTP timestamp of the media at the start of the last pulled frame (NetEq's playout
  // timestamp); valid when has_playout_timestamp. Filler while waiting keeps it still.
  std::uint32_t playout_timestamp = 0;
  bool has_playout_timestamp = false;
};

class JitterBuffer {
 public:
  // Takes ownership of the decoder; its sample rate and channels are the output's.
  JitterBuffer(std::unique_ptr<AudioDecoder> decoder, const JitterBufferConfig& config = {});
  JitterBuffer(const JitterBuffer&) = delete;
  JitterBuffer& operator=(const JitterBuffer&) = delete;

  // Stores one RTP payload (copied). arrival_ns is when it came off the network.
  InsertResult insert(std::uint16_t seq, std::uint32_t timestamp, const std::uint8_t* payload,
                      std::size_t bytes, std::int64_t arrival_ns);

  // Writes exactly frame_samples() samples per channel (interleaved) to out. Meant to be called
  // once per frame duration; now_ns disciplines the internal playout clock, so a few ms of
  // wake-up jitter in the caller do not disturb the delay estimate.
  PlayoutAction pull(std::int64_t now_ns, float* out);

  // Drops every buffered packet and unplayed sample (barge-in); the stream continues with the
  // next inserted packet after a fresh start-up. Statistics and the learned delay are kept.
  void flush();
  // As for a new stream (SSRC change): flush() and forget sequence numbering and the decoder's
  // history.
  void reset();

  JitterBufferStats stats() const;
  const JitterBufferConfig& config() const { return config_; }
  int sample_rate_hz() const { return rate_hz_; }
  int channels() const { return channels_; }
  int frame_samples() const { return frame_samples_; }
  double target_delay_ms() const;
  const AudioDecoder& decoder() const { return *decoder_; }
  // Arrival time of the packet decoded last (0 before the first), for latency accounting.
  std::int64_t last_decoded_arrival_ns() const { return decoded_arrival_ns_; }

 private:
  struct Slot {
    std::int64_t ts = 0;   // unwrapped RTP timestamp
    std::int64_t seq = 0;  // unwrapped sequence number
    std::int64_t arrival_ns = 0;
    int samples = 0;  // duration at the output rate
    std::uint32_t bytes = 0;
    bool used = false;
  };

  enum class State : std::uint8_t { Idle, Playing };

  // ---- packet buffer ----
  int find_slot(std::int64_t ts) const;
  int oldest_slot() const;
  int next_slot() const;  // smallest ts >= expected_ts_
  void free_slot(int index);
  std::uint8_t* payload(int index) {
    return payloads_.data() + static_cast<std::size_t>(index) * max_payload_;
  }
  void clear_packets();
  std::int64_t buffered_span_ts() const;

  // ---- sequence bookkeeping ----
  bool seen(std::int64_t seq) const;
  void mark_seen(std::int64_t seq);
  void start_stream(std::uint16_t seq, std::uint32_t ts);

  // ---- delay estimation ----
  void update_delay(std::int64_t ts, std::int64_t arrival_ns, bool in_order);
  void add_to_histogram(double delay_ms);
  double base_line_ms() const;
  double playout_delay_ms(std::int64_t now_ns) const;
  std::int64_t head_timestamp() const;  // unwrapped media timestamp at the head
  void note_frame(bool missing);

  // ---- playout ----
  std::int64_t playout_clock(std::int64_t now_ns);
  void produce(std::int64_t now_ns);
  void decode_slot(int index, std::int64_t now_ns);
  void conceal(int samples, bool advance, bool comfort, bool dry = false);
  void settle_tail(bool stream_went_on);
  void stretch(std::int64_t now_ns, bool comfort);
  void append_silence(int samples);
  void compact();
  std::size_t unplayed() const { return end_ - head_; }
  float* sync_at(std::size_t sample) {
    return sync_.data() + sample * static_cast<std::size_t>(channels_);
  }

  std::unique_ptr<AudioDecoder> decoder_;
  JitterBufferConfig config_;
  int rate_hz_;
  int channels_;
  int frame_samples_;
  int ts_per_sample_;  // RTP clock units per output sample
  std::size_t max_payload_;
  int max_packet_samples_;

  std::vector<Slot> slots_;
  std::vector<std::uint8_t> payloads_;
  int used_slots_ = 0;

  // Sequence and timestamp unwrapping; seq_window_ marks which of the last kSeqWindow sequence
  // numbers arrived.
  static constexpr int kSeqWindow = 1024;
  bool have_stream_ = false;
  std::int64_t highest_seq_ = 0;
  std::int64_t first_seq_ = 0;
  std::int64_t highest_ts_ = 0;
  std::uint64_t unique_received_ = 0;
  std::uint64_t seq_bits_[kSeqWindow / 64] = {};
  std::uint64_t lost_before_reset_ = 0;

  // Arrival history for the relative delay: (arrival - media time) of the packets of the last
  // kWindowMs, in ms from the stream origin.
  struct Arrival {
    double arrival_ms;
    double offset_ms;
  };
  std::vector<Arrival> arrivals_;
  std::size_t arrivals_head_ = 0;
  std::size_t arrivals_count_ = 0;
  bool have_origin_ = false;
  std::int64_t origin_arrival_ns_ = 0;
  std::int64_t origin_ts_ = 0;
  double last_base_ms_ = 0.0;
  // Histogram of the per-interval maximum relative delay.
  std::vector<double> histogram_;
  std::uint64_t histogram_adds_ = 0;
  bool interval_open_ = false;
  double interval_start_ms_ = 0.0;
  double interval_max_ms_ = 0.0;
  double quantile_delay_ms_ = 0.0;  // 0 until the first interval closed
  // RFC 3550 jitter.
  bool have_last_arrival_ = false;
  double last_transit_ms_ = 0.0;
  double jitter_ms_ = 0.0;
  // Missing-at-playout rate and FEC availability decide the extra FEC frame.
  double loss_ema_ = 0.0;
  double fec_ema_ = 0.0;
  bool fec_frame_held_ = false;

  // Playout.
  State state_ = State::Idle;
  bool have_timeline_ = false;      // expected_ts_ is meaningful (late packets are detected)
  std::int64_t last_head_ts_ = 0;   // unwrapped playout timestamp at the last pull
  std::int64_t play_start_ts_ = 0;  // timestamp playout (re)started at
  bool have_phase_ = false;
  double align_phase_ms_ = 0.0;  // delays congruent to this (mod a frame) align with the pulls
  double last_delay_ms_ = 0.0;   // playout_delay_ms at the last pull
  double shown_delay_ms_ = 0.0;  // current_delay_ms: last_delay_ms_ frozen while dry
  std::int64_t decoded_arrival_ns_ = 0;
  bool have_clock_ = false;
  std::int64_t clock_ns_ = 0;          // smoothed time of the current pull
  std::int64_t expected_ts_ = 0;       // media timestamp right after the last decoded audio
  std::int64_t held_samples_ = 0;      // filler played while waiting, not yet matched to media
  std::int64_t first_arrival_ns_ = 0;  // of the oldest packet while Idle
  bool comfort_ = false;               // the last payload was DTX: silence is intended
  bool concealing_ = false;            // inside a concealment event
  std::uint64_t dry_concealed_ = 0;    // concealed while nothing was buffered, not yet classified
  bool dry_event_ = false;             // that concealment opened an event
  std::int64_t dry_samples_ = 0;       // consecutive filler samples while nothing was buffered
  PlayoutAction action_ = PlayoutAction::Silence;

  // Sync buffer: [0, head_) played history, [head_, end_) unplayed (samples per channel).
  std::vector<float> sync_;
  std::size_t head_ = 0;
  std::size_t end_ = 0;
  std::size_t history_ = 0;
  std::size_t sync_capacity_ = 0;
  TimeStretcher stretcher_;

  JitterBufferStats stats_;
};

}  // namespace rtvoice
