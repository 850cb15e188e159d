// The two audio pipelines of a session and the native clocks that drive them without a sound
// card.
//
// Uplink (microphone to network):
//   capture thread:  push(pcm) -> SPSC ring (input rate)
//   network thread:  pop_packet() -> resample to 48 kHz -> exact 20 ms frames -> Opus (in-band
//                    FEC) -> payload + RTP timestamp (from the sample count) + sequence number.
//                    In PCM mode the frames are 24 kHz PCM16 (the WebSocket transport) instead.
// Downlink (network to speaker):
//   network thread:  push_rtp(seq, ts, payload, arrival_ns) -> SPSC packet queue
//                    (PCM mode: push_pcm(24 kHz int16) -> SPSC ring)
//   playout thread:  pull(n, now_ns) -> JitterBuffer (decode / FEC / PLC / time stretch) ->
//                    resample to the output rate -> exactly n frames.
// Each queue has exactly one producer and one consumer; the encoder, the jitter buffer and the
// decoder belong to one side each. No mutex, no allocation after construction on these paths.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "rtvoice/audio_processing.hpp"
#include "rtvoice/framer.hpp"
#include "rtvoice/jitter_buffer.hpp"
#include "rtvoice/opus_codec.hpp"
#include "rtvoice/packet_queue.hpp"
#include "rtvoice/resampler.hpp"
#include "rtvoice/spsc_ring.hpp"

namespace rtvoice {

// Rate of the PCM16 frames of the WebSocket transport.
inline constexpr int kPcmTransportRateHz = 24000;
// RTP clock of Opus, whatever the decode rate.
inline constexpr int kOpusRtpClockHz = 48000;

enum class PipelineMode : std::uint8_t { Opus, Pcm16 };

struct UplinkConfig {
  int input_rate_hz = 48000;
  int channels = 1;
  PipelineMode mode = PipelineMode::Opus;
  int frame_ms = 20;
  int bitrate_bps = 32000;
  int complexity = 9;
  bool fec = true;
  int packet_loss_perc = 10;
  bool dtx = false;
  int ring_ms = 2000;  // capture ring: how much input may wait for the network thread
  std::uint32_t initial_timestamp = 0;
  std::uint16_t initial_seq = 0;
  int notify_fd = -1;  // if >= 0, an 8-byte 1 is written each time a frame of input is complete
  // pop_due(): how long a frame that is partly here waits for the rest before it is padded with
  // silence, and how far behind its clock the sender may fall with nothing to send before the
  // clock is re-anchored instead of bursting silence.
  int partial_wait_ms = 20;
  int max_lag_ms = 200;
  // pop_due(): a sent frame whose RMS level reaches this is voiced (the uplink's own voice
  // activity on what was actually sent; see UplinkStats::last_voiced_ns).
  double voice_threshold_dbfs = -45.0;
};

struct UplinkPacketInfo {
  std::size_t bytes = 0;
  std::uint32_t timestamp = 0;
  std::uint16_t seq = 0;
  std::uint64_t first_sample = 0;  // index at the transport rate of the frame's first sample
};

struct UplinkStats {
  std::uint64_t frames_pushed = 0;   // input frames accepted by push()
  std::uint64_t frames_dropped = 0;  // input frames dropped: the ring was full
  std::uint64_t packets = 0;
  std::uint64_t payload_bytes = 0;
  std::uint64_t encode_errors = 0;
  std::uint64_t nonfinite_samples = 0;  // NaN/inf input samples replaced by 0 (sanitize.hpp)
  std::uint64_t input_frames_sent = 0;  // pop_due(): packets made of pushed input only
  std::uint64_t padded_frames = 0;      // pop_due(): packets whose input ran short, padded
  std::uint64_t silent_frames = 0;      // pop_due(): packets of silence (nothing was pushed)
  std::uint64_t clock_resets = 0;       // pop_due(): the sender fell behind and re-anchored
  // pop_due(): voice activity and level of what was sent. last_voiced_ns is the now_ns of the
  // pop_due() call that sent the last voiced frame (0: none yet); sent_energy is the sum of
  // squared samples of every sent frame, sent_samples their count (level = energy / samples).
  std::uint64_t voiced_frames = 0;
  std::int64_t last_voiced_ns = 0;
  double sent_energy = 0.0;
  std::uint64_t sent_samples = 0;
  // pop_due(): intervals between the calls that sent a packet (sums for mean and spread over
  // any span; the largest of the last complete 500 ms window; how many exceeded 30 ms).
  std::uint64_t send_intervals = 0;
  double send_interval_sum_ms = 0.0;
  double send_interval_sumsq_ms2 = 0.0;
  double send_interval_max_ms = 0.0;
  std::uint64_t send_intervals_over_30ms = 0;
  // Voice processing (set_processing): far-end reference frames that were missing (given to the
  // canceller as silence; each one more frame of lead kept from then on) and (re-)alignments of
  // the reference with the capture stream (the first when the speaker was ahead, then a speaker
  // that stopped or stayed too far ahead).
  std::uint64_t reference_underruns = 0;
  std::uint64_t reference_resyncs = 0;
};

class Downlink;

class Uplink {
 public:
  explicit Uplink(const UplinkConfig& config);
  ~Uplink();
  Uplink(const Uplink&) = delete;
  Uplink& operator=(const Uplink&) = delete;

  const UplinkConfig& config() const { return config_; }
  int transport_rate_hz() const { return transport_rate_hz_; }
  std::size_t frame_samples() const { return framer_.frame_frames(); }
  // Largest payload pop_packet() can return.
  std::size_t max_packet_bytes() const { return packet_.size(); }
  // Input frames that make one output frame.
  std::size_t input_frame_samples() const { return input_frame_; }

  // Capture thread. Interleaved frames at the input rate; returns the frames accepted (the rest
  // did not fit into the ring and are counted as dropped).
  std::size_t push(const float* pcm, std::size_t frames);
  std::size_t push(const std::int16_t* pcm, std::size_t frames);

  // Network thread. Encodes the next complete frame of input, if any, into out. Returns false
  // when no whole frame is waiting. A frame the encoder fails on is counted and skipped.
  bool pop_packet(std::uint8_t* out, std::size_t capacity, UplinkPacketInfo& info);
  // Network thread. Pads the input waiting for a frame with silence so that the next
  // pop_packet() calls return it; for the end of a stream.
  void finish();

  // Network thread: the sample clock of a live stream. Packet n is due at start + n * frame_ms,
  // start being the now_ns of the first call. Returns false while the next packet is not due.
  // A due packet is the next frame of input; when the input runs short it waits up to
  // partial_wait_ms for the rest, then is padded with silence; with no input at all it is
  // silence (a microphone never stops). So the caller only asks "is a packet due?".
  bool pop_due(std::int64_t now_ns, std::uint8_t* out, std::size_t capacity,
               UplinkPacketInfo& info);
  // Any thread: when the next pop_due() packet is due, or INT64_MIN before the first call.
  std::int64_t next_due_ns() const { return next_due_ns_.load(std::memory_order_acquire); }
  // Network thread (the ring's consumer): moves up to max_frames of input that is still waiting
  // in the capture ring to out, for handing it to another Uplink. Returns the frames moved.
  std::size_t take_input(float* out, std::size_t max_frames);

  // Network thread (the encoder's owner): from measured loss, for example.
  void set_packet_loss_perc(int percent);
  void set_bitrate(int bps);
  void set_fec(bool enabled);
  void set_dtx(bool enabled);

  // Any thread.
  UplinkStats stats() const;
  // Input frames waiting in the ring.
  std::size_t pending_input_frames() const;

  // Voice processing on the capture path, before the ring (so before resampling and encoding):
  // echo cancellation, noise suppression, AGC, high-pass, in 10 ms frames at the input rate
  // (mono, 8/16/32/48 kHz). Any thread. The first call creates the processor (the backend and
  // rate are fixed from then on; a later call with another backend throws); later calls change
  // the enable flags and the stream delay, applied at the next frame. Without this, push() is
  // unchanged.
  void set_processing(const ProcessingConfig& config);
  // The processor, or null before set_processing(). Its stats() may be read from any thread.
  const AudioProcessor* processor() const { return proc_.load(std::memory_order_acquire); }
  // Any thread, once: the far-end reference is what `downlink` hands to the speaker (its render
  // tap). The capture thread keeps it `lead_ms` ahead of the capture stream and re-aligns when
  // it runs more than `max_lead_ms` ahead (counted). The downlink must outlive this Uplink.
  void set_echo_reference(Downlink& downlink, int lead_ms, int max_lead_ms);

  // A sound device at another rate than the input rate: push_device() converts its blocks
  // natively first. Call before the first push_device() (the capture thread owns the
  // converter from then on); device_rate_hz is one of the Resampler's rates.
  void set_device_rate(int device_rate_hz);
  int device_rate_hz() const { return device_rate_hz_; }
  // Capture thread (a device callback): mono blocks at the device rate; returns the frames
  // accepted, at the device rate.
  std::size_t push_device(const float* pcm, std::size_t frames);

 private:
  static constexpr std::size_t kFrameSlots = 4;
  struct EchoReference;
  std::size_t accept(const float* pcm, std::size_t frames);
  std::size_t accept_processed(AudioProcessor& proc, const float* pcm, std::size_t frames);
  const float* next_reference(std::size_t frames);
  std::size_t push_impl(const float* pcm, std::size_t frames);
  void feed(const float* in, std::size_t frames, bool flush_resampler);
  void queue_frame(const float* frame, std::uint64_t first, std::size_t frame_values);
  bool encode_one(const float* frame, std::uint64_t first, UplinkPacketInfo& info);
  void note_sent(std::int64_t now_ns);

  UplinkConfig config_;
  int transport_rate_hz_;
  std::size_t input_frame_;
  SpscRing<float> ring_;
  Resampler resampler_;
  Framer<float> framer_;
  std::unique_ptr<OpusEncoder> encoder_;
  std::vector<float> convert_;    // capture thread: int16 -> float
  std::vector<float> in_chunk_;   // network thread
  std::vector<float> resampled_;  // network thread
  std::vector<float> frames_;     // network thread: framed audio waiting to be encoded
  std::uint64_t frame_firsts_[kFrameSlots] = {};
  std::size_t frames_head_ = 0;
  std::size_t frames_count_ = 0;
  std::vector<std::uint8_t> packet_;
  std::uint16_t next_seq_;
  int finish_stage_ = 0;          // 1: drain the ring and the resampler, 2: pad the last frame
  std::vector<float> sanitized_;  // capture thread: input with non-finite samples replaced
  // pop_due() clock (network thread).
  bool clock_started_ = false;
  std::int64_t clock_start_ns_ = 0;
  std::uint64_t due_index_ = 0;
  bool last_was_input_ = false;  // the last due packet carried input
  std::atomic<std::int64_t> next_due_ns_;
  std::atomic<std::uint64_t> nonfinite_{0};
  std::atomic<std::uint64_t> frames_refused_{0};  // dropped after the ring filled mid-call
  std::atomic<std::uint64_t> input_frames_sent_{0};
  std::atomic<std::uint64_t> padded_frames_{0};
  std::atomic<std::uint64_t> silent_frames_{0};
  std::atomic<std::uint64_t> clock_resets_{0};
  std::atomic<std::uint64_t> packets_{0};
  std::atomic<std::uint64_t> payload_bytes_{0};
  std::atomic<std::uint64_t> encode_errors_{0};
  std::atomic<std::uint64_t> frames_pushed_{0};
  // Voice activity of sent frames (network thread writes, any thread reads).
  double last_frame_energy_ = 0.0;  // network thread: of the frame encode_one() took last
  std::atomic<std::uint64_t> voiced_frames_{0};
  std::atomic<std::int64_t> last_voiced_ns_{0};
  std::atomic<double> sent_energy_{0.0};
  std::atomic<std::uint64_t> sent_samples_{0};
  std::int64_t last_send_ns_ = 0;  // network thread
  std::int64_t send_window_start_ns_ = 0;
  double send_window_max_ms_ = 0.0;
  std::atomic<std::uint64_t> send_intervals_{0};
  std::atomic<double> send_interval_sum_ms_{0.0};
  std::atomic<double> send_interval_sumsq_ms2_{0.0};
  std::atomic<double> send_interval_max_ms_{0.0};
  std::atomic<std::uint64_t> send_intervals_over_30ms_{0};
  // Voice processing: created once by set_processing(), then used by the capture thread.
  std::unique_ptr<AudioProcessor> proc_owner_;
  std::atomic<AudioProcessor*> proc_{nullptr};
  std::atomic<bool> proc_creating_{false};
  std::unique_ptr<EchoReference> ref_owner_;
  std::atomic<EchoReference*> ref_{nullptr};
  std::atomic<bool> ref_creating_{false};
  std::vector<float> proc_block_;  // capture thread: a partial 10 ms frame
  std::size_t proc_fill_ = 0;
  std::atomic<std::uint64_t> reference_underruns_{0};
  std::atomic<std::uint64_t> reference_resyncs_{0};
  // Device-rate conversion (capture thread after set_device_rate()).
  int device_rate_hz_ = 0;
  std::unique_ptr<Resampler> device_resampler_;
  std::vector<float> device_converted_;
  std::size_t device_chunk_ = 0;  // device frames converted per step
};

struct DownlinkConfig {
  int output_rate_hz = 48000;
  int channels = 1;
  PipelineMode mode = PipelineMode::Opus;
  JitterBufferConfig jitter;
  int queue_packets = 512;    // network -> playout packet queue
  int pcm_ring_ms = 20000;    // PCM mode: how much received audio may wait to be played
  int pcm_prebuffer_ms = 60;  // PCM mode: buffered before playing starts
  // Output voice onsets (DownlinkStats::voice_onsets) are 5 ms blocks at least this loud.
  double voice_threshold_dbfs = -45.0;
};

// Published by the playout thread after each pull, readable from any thread.
struct DownlinkStats {
  JitterBufferStats jitter;
  std::uint64_t packets_queued = 0;
  std::uint64_t packets_dropped_queue_full = 0;
  std::uint64_t packets_dropped_oversized = 0;
  std::uint64_t samples_pulled = 0;        // at the output rate
  std::uint64_t media_samples_played = 0;  // output-rate samples carrying the stream's audio
  std::uint64_t flushes = 0;
  std::uint64_t pcm_underruns = 0;  // PCM mode: pulls that ran out of audio
  // Voice onsets of the played output: a 5 ms block at or above voice_threshold_dbfs after at
  // least kOnsetGapMs without one. The last kOnsetHistory are kept, onset k in slot
  // k % kOnsetHistory (k counted from 0). For each: when it played (the pull's now_ns plus its
  // offset), when the produced block holding it was scheduled to play by the jitter buffer
  // (jb_ns) and when that block's first sample played (block_play_ns), and the arrival time of
  // the packet decoded last for that block (0 in PCM mode, or before any packet).
  static constexpr int kOnsetHistory = 8;
  static constexpr int kOnsetGapMs = 250;
  std::uint64_t voice_onsets = 0;
  std::int64_t onset_play_ns[kOnsetHistory] = {};
  std::int64_t onset_block_play_ns[kOnsetHistory] = {};
  std::int64_t onset_jb_ns[kOnsetHistory] = {};
  std::int64_t onset_arrival_ns[kOnsetHistory] = {};
  std::int64_t last_voiced_ns = 0;  // end of the last voiced block played (0: none yet)
  double output_energy = 0.0;       // sum of squared samples pulled (level over samples_pulled)
};

class Downlink {
 public:
  explicit Downlink(const DownlinkConfig& config);
  ~Downlink();
  Downlink(const Downlink&) = delete;
  Downlink& operator=(const Downlink&) = delete;

  const DownlinkConfig& config() const { return config_; }
  int decode_rate_hz() const { return decode_rate_hz_; }

  // Network thread (Opus mode). Returns false when the packet was dropped (queue full or
  // payload too large); counted either way.
  bool push_rtp(std::uint16_t seq, std::uint32_t timestamp, const std::uint8_t* payload,
                std::size_t bytes, std::int64_t arrival_ns);
  // Network thread (PCM mode): 24 kHz interleaved int16. Returns the frames accepted.
  std::size_t push_pcm(const std::int16_t* pcm, std::size_t frames);

  // Playout thread. Writes exactly `frames` interleaved frames at the output rate. now_ns is the
  // time the first of them is played, on the clock of the arrival times.
  void pull(float* out, std::size_t frames, std::int64_t now_ns);

  // Any thread: drop all queued and buffered audio at the next pull (barge-in).
  void request_flush();

  // Any thread, idempotent: from the next pull on, every pulled frame is also written to a
  // mono ring of about a second at the output rate (the echo canceller's far-end reference;
  // its one consumer is the capture thread). Returns that ring. Mono downlinks only.
  SpscRing<float>& enable_render_tap();

  // A sound device at another rate than the output rate: pull_device() converts natively.
  // Call before the first pull_device() (the playout thread owns the converter from then on).
  void set_device_rate(int device_rate_hz);
  int device_rate_hz() const { return device_rate_hz_; }
  // Playout thread (a device callback): exactly `frames` mono frames at the device rate.
  void pull_device(float* out, std::size_t frames, std::int64_t now_ns);

  // Any thread.
  DownlinkStats stats() const;
  std::uint64_t media_samples_played() const {
    return media_played_.load(std::memory_order_acquire);
  }

 private:
  void apply_flush();
  void produce_opus(std::int64_t now_ns);
  void produce_pcm(std::int64_t now_ns);
  void append(const float* pcm, std::size_t frames, bool media, std::int64_t arrival_ns,
              std::int64_t jb_ns);
  void scan_output(const float* out, std::size_t frames, std::int64_t now_ns);
  void publish();

  DownlinkConfig config_;
  int decode_rate_hz_;
  PacketQueue queue_;
  std::unique_ptr<SpscRing<std::int16_t>> pcm_ring_;
  std::unique_ptr<JitterBuffer> jitter_;
  std::unique_ptr<Resampler> resampler_;  // null when the decode rate is the output rate
  std::size_t decode_frame_;              // samples per channel per jitter-buffer pull
  std::vector<float> decoded_;
  std::vector<std::int16_t> pcm_in_;
  std::vector<float> resampled_;
  std::vector<float> pending_;  // output-rate audio produced but not yet pulled
  std::size_t pending_frames_ = 0;
  std::size_t pending_media_ = 0;  // of pending_frames_, how many carry media (prefix count)
  bool pcm_playing_ = false;
  std::uint64_t flush_applied_ = 0;
  std::uint64_t samples_pulled_ = 0;
  std::uint64_t pcm_underruns_ = 0;
  // Produced blocks still (partly) in pending_, oldest first: for onset accounting.
  struct Block {
    std::size_t frames = 0;
    std::size_t consumed = 0;
    std::int64_t arrival_ns = 0;
    std::int64_t jb_ns = 0;
  };
  std::vector<Block> blocks_;
  std::size_t blocks_head_ = 0;
  std::size_t blocks_count_ = 0;
  double voice_power_ = 0.0;  // mean square at the voice threshold
  bool have_voiced_ = false;
  std::int64_t last_voiced_ns_ = 0;
  double output_energy_ = 0.0;
  std::uint64_t voice_onsets_ = 0;
  std::int64_t onset_play_ns_[DownlinkStats::kOnsetHistory] = {};
  std::int64_t onset_block_play_ns_[DownlinkStats::kOnsetHistory] = {};
  std::int64_t onset_jb_ns_[DownlinkStats::kOnsetHistory] = {};
  std::int64_t onset_arrival_ns_[DownlinkStats::kOnsetHistory] = {};

  std::atomic<std::uint64_t> flush_requested_{0};
  std::atomic<std::uint64_t> media_played_{0};
  // Device-rate conversion (playout thread after set_device_rate()): converted audio not yet
  // handed to the device.
  int device_rate_hz_ = 0;
  std::unique_ptr<Resampler> device_resampler_;
  std::vector<float> device_block_;    // one 10 ms block at the output rate
  std::vector<float> device_pending_;  // at the device rate
  std::size_t device_pending_frames_ = 0;
  std::unique_ptr<SpscRing<float>> tap_owner_;
  std::atomic<SpscRing<float>*> tap_{nullptr};
  std::atomic<bool> tap_creating_{false};
  // A snapshot of the playout side's counters, published with a sequence lock made of atomics
  // only (no torn reads, no data race).
  struct Published;
  std::unique_ptr<Published> published_;
};

// A native playout clock for use without a sound card: every frame_ms on a monotonic clock it
// pulls one frame from the Downlink (as the playout thread) and writes it to a ring that the
// application reads (as that ring's consumer).
class PlayoutDriver {
 public:
  PlayoutDriver(Downlink& downlink, int frame_ms, std::size_t ring_frames);
  ~PlayoutDriver();
  PlayoutDriver(const PlayoutDriver&) = delete;
  PlayoutDriver& operator=(const PlayoutDriver&) = delete;

  void start();
  void stop();  // joins the thread; idempotent
  bool running() const { return running_.load(std::memory_order_acquire); }
  SpscRing<float>& output() { return ring_; }
  std::uint64_t ticks() const { return ticks_.load(std::memory_order_relaxed); }
  // Ticks that woke more than one frame late (the thread was starved).
  std::uint64_t late_ticks() const { return late_ticks_.load(std::memory_order_relaxed); }

 private:
  void run();

  Downlink& downlink_;
  int frame_ms_;
  std::size_t frame_frames_;
  SpscRing<float> ring_;
  std::vector<float> buffer_;
  std::thread thread_;
  std::atomic<bool> running_{false};
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> ticks_{0};
  std::atomic<std::uint64_t> late_ticks_{0};
};

// A native capture clock for use without a microphone: every frame_ms on a monotonic clock it
// moves one frame from a source ring (written by the application) into the Uplink (as its
// capture thread), padding with silence when the source has too little, as a live microphone
// would keep producing samples.
class CaptureDriver {
 public:
  CaptureDriver(Uplink& uplink, int frame_ms, std::size_t ring_frames, bool pad_silence);
  ~CaptureDriver();
  CaptureDriver(const CaptureDriver&) = delete;
  CaptureDriver& operator=(const CaptureDriver&) = delete;

  void start();
  void stop();
  bool running() const { return running_.load(std::memory_order_acquire); }
  SpscRing<float>& source() { return ring_; }
  std::uint64_t ticks() const { return ticks_.load(std::memory_order_relaxed); }
  std::uint64_t silence_frames() const { return silence_frames_.load(std::memory_order_relaxed); }

 private:
  void run();

  Uplink& uplink_;
  int frame_ms_;
  std::size_t frame_frames_;
  bool pad_silence_;
  SpscRing<float> ring_;
  std::vector<float> buffer_;
  std::thread thread_;
  std::atomic<bool> running_{false};
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> ticks_{0};
  std::atomic<std::uint64_t> silence_frames_{0};
};

}  // namespace rtvoice
