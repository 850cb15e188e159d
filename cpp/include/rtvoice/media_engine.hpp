// The per-packet media path of WebRTC calls, off the GIL: one native thread serves every call
// of the process.
//
// For each call (a MediaCall), that thread owns the receive side of the ICE-selected UDP socket
// and the whole RTP/RTCP exchange:
//   outbound: on the Uplink's sample clock, pop_due() -> RTP header (sequence and timestamp from
//             the Uplink plus random offsets, SSRC and payload type as negotiated, marker on the
//             first packet) -> SRTP -> sendto() on the socket, to the selected remote address;
//   inbound:  recvfrom() -> RFC 7983 demultiplexing by the first byte: SRTP -> Downlink's packet
//             queue; SRTCP -> reception reports, RTT, the peer's loss and jitter; anything else
//             (STUN, DTLS carrying SCTP) is queued for Python, which hands it to the ICE
//             agent's protocol object as if its own event loop had read it (notify_fd() becomes
//             readable when something is queued);
//   RTCP:     a compound SR (or RR) + SDES CNAME about every rtcp_interval_ms (x U(0.5, 1.5)),
//             from the native counters.
// Python keeps signaling, ICE, DTLS (whose keying material keys the SRTP sessions here), SCTP
// and its own sends on the same socket (sendto() of whole datagrams from two threads is safe).
// The thread starts with the first call and stops when the last one is removed.
// POSIX only (poll, pipes): on Windows a MediaCall cannot be created (the constructor throws
// std::runtime_error) and calls use aiortc's RTP path.
#pragma once

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <sys/socket.h>
#endif

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "rtvoice/pipelines.hpp"
#include "rtvoice/rtp.hpp"
#include "rtvoice/srtp_session.hpp"

namespace rtvoice {

struct MediaCallConfig {
  int fd = -1;  // the ICE-selected UDP socket (duplicated: the call keeps its own descriptor)
  sockaddr_storage remote{};
  socklen_t remote_len = 0;
  SrtpProfile profile = SrtpProfile::Aes128CmSha1_80;
  std::vector<std::uint8_t> tx_key;  // master key + salt, outbound
  std::vector<std::uint8_t> rx_key;  // master key + salt, inbound
  std::uint32_t ssrc = 0;
  std::uint8_t payload_type = 111;
  std::uint16_t seq_offset = 0;
  std::uint32_t timestamp_offset = 0;
  rtp::HeaderExtensions extensions;
  std::string cname;
  int rtcp_interval_ms = 1000;
  int python_slots = 128;  // datagrams that may wait for Python (the rest are counted, dropped)
  std::uint32_t seed = 0;  // of the RTCP interval's randomization
};

struct MediaCallStats {
  // Outbound.
  std::uint64_t packets_sent = 0;
  std::uint64_t payload_bytes_sent = 0;
  std::uint64_t bytes_sent = 0;  // on the wire, SRTP included
  std::uint64_t send_errors = 0;
  std::uint64_t send_would_block = 0;
  std::uint64_t protect_errors = 0;
  std::uint64_t uplink_contention = 0;  // another thread held the Uplink's network side
  std::uint64_t rtcp_sent = 0;
  // Inbound.
  std::uint64_t datagrams_received = 0;
  std::uint64_t packets_received = 0;  // SRTP that authenticated and parsed
  std::uint64_t payload_bytes_received = 0;
  std::int64_t packets_lost = 0;  // RFC 3550 cumulative, of the current source
  double jitter_ms = 0.0;         // interarrival jitter of the current source
  std::uint64_t srtp_errors = 0;  // failed authentication / replay / unprotect
  std::uint64_t srtcp_errors = 0;
  std::uint64_t malformed = 0;  // RTP or RTCP that did not parse after unprotect
  std::uint64_t other_payload_type = 0;
  std::uint64_t foreign_source = 0;  // media from another address than the selected one
  std::uint64_t ssrc_changes = 0;
  std::uint32_t remote_ssrc = 0;
  std::uint64_t gated = 0;             // received while the call's receive gate was closed
  std::uint64_t downlink_refused = 0;  // the Downlink's queue was full (counted there too)
  std::uint64_t downlink_contention = 0;
  std::uint64_t rtcp_received = 0;
  std::uint64_t bye_received = 0;
  std::uint64_t to_python = 0;          // non-media datagrams handed to Python
  std::uint64_t to_python_dropped = 0;  // ... dropped: its queue was full
  std::uint64_t oversized = 0;          // datagrams larger than the receive buffer
  std::int64_t last_rtp_ns = 0;         // steady clock; 0: none yet
  std::int64_t last_rtcp_ns = 0;
  // From the peer's reception reports about this call's stream.
  std::uint64_t reports_received = 0;
  double rtt_ms = -1.0;  // -1: not measured yet
  double remote_fraction_lost = 0.0;
  std::int64_t remote_packets_lost = 0;
  double remote_jitter_ms = 0.0;
  int loss_hint_applied = -1;
};

class MediaCall {
 public:
  // Throws std::invalid_argument for a bad descriptor, address or key; std::runtime_error when
  // the descriptor cannot be duplicated.
  MediaCall(const MediaCallConfig& config, Uplink* uplink, std::atomic<bool>* uplink_busy,
            Downlink* downlink, std::atomic<bool>* downlink_busy);
  ~MediaCall();
  MediaCall(const MediaCall&) = delete;
  MediaCall& operator=(const MediaCall&) = delete;

  // Any thread.
  int notify_fd() const { return notify_[0]; }
  void set_send_open(bool open) { send_open_.store(open, std::memory_order_release); }
  void set_recv_open(bool open) { recv_open_.store(open, std::memory_order_release); }
  bool send_open() const { return send_open_.load(std::memory_order_acquire); }
  bool recv_open() const { return recv_open_.load(std::memory_order_acquire); }
  // Applied to the Uplink's encoder on the media thread (its owner).
  void set_loss_hint(int percent) { loss_hint_.store(percent, std::memory_order_release); }
  MediaCallStats stats() const;
  // The one consumer (Python): the next queued non-media datagram. Returns false when none.
  bool pop_datagram(std::uint8_t* out, std::size_t capacity, std::size_t& len,
                    sockaddr_storage& from, socklen_t& from_len);
  static constexpr std::size_t kMaxDatagram = 2048;

  // Once the call is off the media thread (MediaEngine::remove returned): closes its socket
  // descriptor and wake-up pipe. Counters stay readable; nothing is received any more.
  void close_descriptors();

  // Media thread.
  int fd() const { return fd_; }
  void on_readable(std::int64_t now_ns);
  // Sends what is due; returns when it wants to be called again (steady ns).
  std::int64_t service(std::int64_t now_ns);

 private:
  struct Slot {
    std::vector<std::uint8_t> data;
    std::size_t len = 0;
    sockaddr_storage from{};
    socklen_t from_len = 0;
  };
  void handle_rtp(std::uint8_t* buf, std::size_t len, std::int64_t now_ns);
  void handle_rtcp(std::uint8_t* buf, std::size_t len, std::int64_t now_ns);
  void to_python(const std::uint8_t* buf, std::size_t len, const sockaddr_storage& from,
                 socklen_t from_len);
  void send_packet(const UplinkPacketInfo& info, std::int64_t now_ns);
  void send_report(std::int64_t now_ns);
  bool send_datagram(const std::uint8_t* data, std::size_t len);
  std::int64_t next_report_delay_ns();

  MediaCallConfig config_;
  int fd_ = -1;
  int notify_[2] = {-1, -1};
  Uplink* uplink_;
  std::atomic<bool>* uplink_busy_;
  Downlink* downlink_;
  std::atomic<bool>* downlink_busy_;
  std::unique_ptr<SrtpSession> tx_;
  std::unique_ptr<SrtpSession> rx_;
  std::atomic<bool> send_open_{true};
  std::atomic<bool> recv_open_{true};
  std::atomic<int> loss_hint_{-1};

  // Media thread only.
  std::vector<std::uint8_t> payload_;
  std::vector<std::uint8_t> packet_;
  std::vector<std::uint8_t> recv_;
  std::vector<std::uint8_t> report_;
  bool first_packet_ = true;
  int applied_loss_hint_ = -1;
  std::uint32_t last_rtp_timestamp_ = 0;
  std::int64_t last_send_ns_ = 0;
  std::int64_t next_report_ns_ = 0;
  rtp::ReceptionStats reception_{48000};
  bool have_source_ = false;
  std::uint32_t last_sr_compact_ = 0;
  std::int64_t last_sr_arrival_ns_ = 0;
  std::mt19937 rng_;

  // Queue of non-media datagrams for Python.
  mutable std::mutex queue_mu_;
  std::vector<Slot> slots_;
  std::size_t head_ = 0;
  std::size_t count_ = 0;

  // Counters: written by the media thread, read anywhere.
  struct Counters;
  std::unique_ptr<Counters> c_;
};

struct MediaEngineStats {
  std::size_t calls = 0;
  bool running = false;         // any media thread runs
  std::size_t threads = 0;      // media threads running now
  std::size_t max_threads = 0;  // the pool's size
  std::uint64_t loops = 0;
  std::uint64_t threads_started = 0;
};

// The process's media threads and their calls: a small fixed pool (one thread per core, at
// most four), each serving its share of the calls; a new call goes to the thread with the
// fewest. A thread starts with its first call and stops when its last one is removed.
class MediaEngine {
 public:
  static MediaEngine& instance();
  // Any thread. add() starts a thread if needed; remove() returns once the media thread no
  // longer touches the call (and joins the thread when it was its last one).
  void add(const std::shared_ptr<MediaCall>& call);
  void remove(const std::shared_ptr<MediaCall>& call);
  MediaEngineStats stats() const;

  explicit MediaEngine(std::size_t threads = 0);  // 0: one per core, at most four
  ~MediaEngine();
  MediaEngine(const MediaEngine&) = delete;
  MediaEngine& operator=(const MediaEngine&) = delete;

 private:
  struct Worker;
  void run(Worker& w);
  static void wake(Worker& w);
  void stop_locked(Worker& w, std::unique_lock<std::mutex>& lock);

  std::mutex lifecycle_mu_;  // serializes start and stop of the threads
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<std::uint64_t> loops_{0};
  std::uint64_t threads_started_ = 0;
};

}  // namespace rtvoice
