#include "rtvoice/media_engine.hpp"

#ifdef _WIN32
#include <stdexcept>

namespace rtvoice {
struct MediaCall::Counters {};
MediaCall::MediaCall(const MediaCallConfig&, Uplink*, std::atomic<bool>*, Downlink*,
                     std::atomic<bool>*) {
  throw std::runtime_error("the native media path is not available on Windows");
}
MediaCall::~MediaCall() = default;
void MediaCall::close_descriptors() {}
MediaCallStats MediaCall::stats() const { return {}; }
bool MediaCall::pop_datagram(std::uint8_t*, std::size_t, std::size_t&, sockaddr_storage&,
                             socklen_t&) {
  return false;
}
void MediaCall::on_readable(std::int64_t) {}
std::int64_t MediaCall::service(std::int64_t now_ns) { return now_ns; }
struct MediaEngine::Worker {};
MediaEngine& MediaEngine::instance() {
  static MediaEngine* engine = new MediaEngine();
  return *engine;
}
MediaEngine::MediaEngine(std::size_t) {}
MediaEngine::~MediaEngine() = default;
void MediaEngine::add(const std::shared_ptr<MediaCall>&) {
  throw std::runtime_error("the native media path is not available on Windows");
}
void MediaEngine::remove(const std::shared_ptr<MediaCall>&) {}
MediaEngineStats MediaEngine::stats() const { return {}; }
}  // namespace rtvoice

#else  // POSIX

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace rtvoice {
namespace {

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::int64_t unix_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool set_nonblocking(int fd) {
  const int flags = fcntl(fd, F_GETFL, 0);
  return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

bool same_address(const sockaddr_storage& a, socklen_t alen, const sockaddr_storage& b) {
  (void)alen;
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    const auto& x = reinterpret_cast<const sockaddr_in&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in&>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  if (a.ss_family == AF_INET6) {
    const auto& x = reinterpret_cast<const sockaddr_in6&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in6&>(b);
    return x.sin6_port == y.sin6_port &&
           std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof(x.sin6_addr)) == 0;
  }
  return false;
}

// Claims a single-owner side of a pipeline for this thread without throwing: false when
// another thread holds it.
class TryClaim {
 public:
  explicit TryClaim(std::atomic<bool>* flag) : flag_(flag) {
    owned_ = flag_ == nullptr || !flag_->exchange(true, std::memory_order_acquire);
  }
  ~TryClaim() {
    if (owned_ && flag_ != nullptr) flag_->store(false, std::memory_order_release);
  }
  TryClaim(const TryClaim&) = delete;
  TryClaim& operator=(const TryClaim&) = delete;
  bool owned() const { return owned_; }

 private:
  std::atomic<bool>* flag_;
  bool owned_ = false;
};

constexpr std::int64_t kMs = 1000000;
constexpr std::int64_t kIdleWakeNs = 20 * kMs;
constexpr int kMaxReadsPerWake = 64;

}  // namespace

struct MediaCall::Counters {
  std::atomic<std::uint64_t> packets_sent{0}, payload_bytes_sent{0}, bytes_sent{0}, send_errors{0},
      send_would_block{0}, protect_errors{0}, uplink_contention{0}, rtcp_sent{0},
      datagrams_received{0}, packets_received{0}, payload_bytes_received{0}, srtp_errors{0},
      srtcp_errors{0}, malformed{0}, other_payload_type{0}, foreign_source{0}, ssrc_changes{0},
      gated{0}, downlink_refused{0}, downlink_contention{0}, rtcp_received{0}, bye_received{0},
      to_python{0}, to_python_dropped{0}, oversized{0}, reports_received{0};
  std::atomic<std::uint32_t> remote_ssrc{0};
  std::atomic<std::int64_t> packets_lost{0}, last_rtp_ns{0}, last_rtcp_ns{0},
      remote_packets_lost{0};
  std::atomic<double> jitter_ms{0.0}, rtt_ms{-1.0}, remote_fraction_lost{0.0},
      remote_jitter_ms{0.0};
  std::atomic<int> loss_hint_applied{-1};
};

MediaCall::MediaCall(const MediaCallConfig& config, Uplink* uplink, std::atomic<bool>* uplink_busy,
                     Downlink* downlink, std::atomic<bool>* downlink_busy)
    : config_(config),
      uplink_(uplink),
      uplink_busy_(uplink_busy),
      downlink_(downlink),
      downlink_busy_(downlink_busy),
      rng_(config.seed),
      c_(std::make_unique<Counters>()) {
  if (config.fd < 0) throw std::invalid_argument("MediaCall: the socket descriptor is negative");
  if (config.remote_len == 0 ||
      (config.remote.ss_family != AF_INET && config.remote.ss_family != AF_INET6)) {
    throw std::invalid_argument("MediaCall: the remote address is not IPv4 or IPv6");
  }
  if (config.rtcp_interval_ms < 100 || config.rtcp_interval_ms > 60000) {
    throw std::invalid_argument("MediaCall: rtcp_interval_ms must be in 100..60000");
  }
  if (config.python_slots < 1 || config.python_slots > 4096) {
    throw std::invalid_argument("MediaCall: python_slots must be in 1..4096");
  }
  if (config.payload_type > 127) {
    throw std::invalid_argument("MediaCall: payload_type must be in 0..127");
  }
  if (uplink != nullptr && uplink->config().mode != PipelineMode::Opus) {
    throw std::invalid_argument("MediaCall: the Uplink must be in 'opus' mode");
  }
  if (downlink != nullptr && downlink->config().mode != PipelineMode::Opus) {
    throw std::invalid_argument("MediaCall: the Downlink must be in 'opus' mode");
  }
  tx_ = std::make_unique<SrtpSession>(config.profile, config.tx_key.data(), config.tx_key.size(),
                                      SrtpSession::Direction::Outbound);
  rx_ = std::make_unique<SrtpSession>(config.profile, config.rx_key.data(), config.rx_key.size(),
                                      SrtpSession::Direction::Inbound);
  // The keys now live in the SRTP sessions only.
  std::fill(config_.tx_key.begin(), config_.tx_key.end(), 0);
  std::fill(config_.rx_key.begin(), config_.rx_key.end(), 0);
  config_.tx_key.clear();
  config_.rx_key.clear();
  fd_ = fcntl(config.fd, F_DUPFD_CLOEXEC, 0);
  if (fd_ < 0) {
    throw std::runtime_error(std::string("MediaCall: cannot duplicate the socket: ") +
                             std::strerror(errno));
  }
  if (!set_nonblocking(fd_) || pipe(notify_) != 0 || !set_nonblocking(notify_[0]) ||
      !set_nonblocking(notify_[1])) {
    const int err = errno;
    if (notify_[0] >= 0) close(notify_[0]);
    if (notify_[1] >= 0) close(notify_[1]);
    close(fd_);
    throw std::runtime_error(std::string("MediaCall: cannot set up its descriptors: ") +
                             std::strerror(err));
  }
  fcntl(notify_[0], F_SETFD, FD_CLOEXEC);
  fcntl(notify_[1], F_SETFD, FD_CLOEXEC);
  const std::size_t max_payload = uplink != nullptr ? uplink->max_packet_bytes() : 1500;
  payload_.resize(max_payload);
  packet_.resize(max_payload + 64 + kSrtpMaxOverhead);
  recv_.resize(kMaxDatagram + 1);
  report_.resize(256 + kSrtpMaxOverhead);
  slots_.resize(static_cast<std::size_t>(config.python_slots));
  for (Slot& s : slots_) s.data.resize(kMaxDatagram);
}

MediaCall::~MediaCall() { close_descriptors(); }

void MediaCall::close_descriptors() {
  std::lock_guard<std::mutex> lock(queue_mu_);
  if (fd_ >= 0) close(fd_);
  if (notify_[0] >= 0) close(notify_[0]);
  if (notify_[1] >= 0) close(notify_[1]);
  fd_ = notify_[0] = notify_[1] = -1;
  count_ = 0;
}

MediaCallStats MediaCall::stats() const {
  const Counters& c = *c_;
  MediaCallStats s;
  const auto r = std::memory_order_relaxed;
  s.packets_sent = c.packets_sent.load(r);
  s.payload_bytes_sent = c.payload_bytes_sent.load(r);
  s.bytes_sent = c.bytes_sent.load(r);
  s.send_errors = c.send_errors.load(r);
  s.send_would_block = c.send_would_block.load(r);
  s.protect_errors = c.protect_errors.load(r);
  s.uplink_contention = c.uplink_contention.load(r);
  s.rtcp_sent = c.rtcp_sent.load(r);
  s.datagrams_received = c.datagrams_received.load(r);
  s.packets_received = c.packets_received.load(r);
  s.payload_bytes_received = c.payload_bytes_received.load(r);
  s.packets_lost = c.packets_lost.load(r);
  s.jitter_ms = c.jitter_ms.load(r);
  s.srtp_errors = c.srtp_errors.load(r);
  s.srtcp_errors = c.srtcp_errors.load(r);
  s.malformed = c.malformed.load(r);
  s.other_payload_type = c.other_payload_type.load(r);
  s.foreign_source = c.foreign_source.load(r);
  s.ssrc_changes = c.ssrc_changes.load(r);
  s.remote_ssrc = c.remote_ssrc.load(r);
  s.gated = c.gated.load(r);
  s.downlink_refused = c.downlink_refused.load(r);
  s.downlink_contention = c.downlink_contention.load(r);
  s.rtcp_received = c.rtcp_received.load(r);
  s.bye_received = c.bye_received.load(r);
  s.to_python = c.to_python.load(r);
  s.to_python_dropped = c.to_python_dropped.load(r);
  s.oversized = c.oversized.load(r);
  s.last_rtp_ns = c.last_rtp_ns.load(r);
  s.last_rtcp_ns = c.last_rtcp_ns.load(r);
  s.reports_received = c.reports_received.load(r);
  s.rtt_ms = c.rtt_ms.load(r);
  s.remote_fraction_lost = c.remote_fraction_lost.load(r);
  s.remote_packets_lost = c.remote_packets_lost.load(r);
  s.remote_jitter_ms = c.remote_jitter_ms.load(r);
  s.loss_hint_applied = c.loss_hint_applied.load(r);
  return s;
}

bool MediaCall::pop_datagram(std::uint8_t* out, std::size_t capacity, std::size_t& len,
                             sockaddr_storage& from, socklen_t& from_len) {
  std::lock_guard<std::mutex> lock(queue_mu_);
  if (notify_[0] < 0) return false;
  // Drain the wake-up pipe first, so that a datagram queued after the last pop wakes again.
  std::uint8_t sink[64];
  while (read(notify_[0], sink, sizeof(sink)) > 0) {
  }
  if (count_ == 0) return false;
  Slot& s = slots_[head_];
  len = std::min(s.len, capacity);
  std::memcpy(out, s.data.data(), len);
  from = s.from;
  from_len = s.from_len;
  head_ = (head_ + 1) % slots_.size();
  --count_;
  return true;
}

void MediaCall::to_python(const std::uint8_t* buf, std::size_t len, const sockaddr_storage& from,
                          socklen_t from_len) {
  bool was_empty;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (count_ == slots_.size()) {
      c_->to_python_dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    Slot& s = slots_[(head_ + count_) % slots_.size()];
    std::memcpy(s.data.data(), buf, len);
    s.len = len;
    s.from = from;
    s.from_len = from_len;
    was_empty = count_ == 0;
    ++count_;
    if (was_empty) {
      const std::uint8_t one = 1;
      // A full pipe already holds a wake-up.
      (void)!write(notify_[1], &one, 1);
    }
  }
  c_->to_python.fetch_add(1, std::memory_order_relaxed);
}

void MediaCall::on_readable(std::int64_t now_ns) {
  for (int i = 0; i < kMaxReadsPerWake; ++i) {
    sockaddr_storage from{};
    socklen_t from_len = sizeof(from);
    const ssize_t n = recvfrom(fd_, recv_.data(), recv_.size(), MSG_DONTWAIT | MSG_TRUNC,
                               reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // EAGAIN, or an ICMP error reported on the socket: nothing more to read now
    }
    c_->datagrams_received.fetch_add(1, std::memory_order_relaxed);
    auto len = static_cast<std::size_t>(n);
    if (len > kMaxDatagram) {
      c_->oversized.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (len == 0) continue;
    if (rtp::classify(recv_[0]) == rtp::DatagramKind::Media) {
      if (!same_address(from, from_len, config_.remote)) {
        c_->foreign_source.fetch_add(1, std::memory_order_relaxed);
      }
      if (rtp::is_rtcp(recv_.data(), len)) {
        handle_rtcp(recv_.data(), len, now_ns);
      } else {
        handle_rtp(recv_.data(), len, now_ns);
      }
    } else {
      to_python(recv_.data(), len, from, from_len);
    }
  }
}

void MediaCall::handle_rtp(std::uint8_t* buf, std::size_t len, std::int64_t now_ns) {
  if (rx_->unprotect(buf, len) != 0) {
    c_->srtp_errors.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  rtp::RtpView v;
  if (!rtp::parse_rtp(buf, len, v)) {
    c_->malformed.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (v.payload_type != config_.payload_type) {
    c_->other_payload_type.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (!have_source_ || v.ssrc != reception_.ssrc()) {
    if (have_source_) c_->ssrc_changes.fetch_add(1, std::memory_order_relaxed);
    reception_.reset(v.ssrc);
    have_source_ = true;
    c_->remote_ssrc.store(v.ssrc, std::memory_order_relaxed);
  }
  reception_.on_packet(v.seq, v.timestamp, now_ns);
  c_->packets_received.fetch_add(1, std::memory_order_relaxed);
  c_->payload_bytes_received.fetch_add(v.payload_len, std::memory_order_relaxed);
  c_->packets_lost.store(reception_.cumulative_lost(), std::memory_order_relaxed);
  c_->jitter_ms.store(reception_.jitter_rtp() / 48.0, std::memory_order_relaxed);
  c_->last_rtp_ns.store(now_ns, std::memory_order_relaxed);
  if (downlink_ == nullptr || v.payload_len == 0) return;
  if (!recv_open()) {
    c_->gated.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  TryClaim claim(downlink_busy_);
  if (!claim.owned()) {
    c_->downlink_contention.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (!downlink_->push_rtp(v.seq, v.timestamp, v.payload, v.payload_len, now_ns)) {
    c_->downlink_refused.fetch_add(1, std::memory_order_relaxed);
  }
}

void MediaCall::handle_rtcp(std::uint8_t* buf, std::size_t len, std::int64_t now_ns) {
  if (rx_->unprotect_rtcp(buf, len) != 0) {
    c_->srtcp_errors.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  rtp::RtcpSummary s;
  if (!rtp::parse_rtcp(buf, len, s)) {
    c_->malformed.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  c_->rtcp_received.fetch_add(1, std::memory_order_relaxed);
  c_->last_rtcp_ns.store(now_ns, std::memory_order_relaxed);
  if (s.bye) c_->bye_received.fetch_add(1, std::memory_order_relaxed);
  if (s.has_sr) {
    last_sr_compact_ = rtp::ntp_compact(s.sr_ntp);
    last_sr_arrival_ns_ = now_ns;
  }
  for (int i = 0; i < s.blocks; ++i) {
    const rtp::ReportBlock& b = s.block[i];
    if (b.ssrc != config_.ssrc) continue;
    c_->reports_received.fetch_add(1, std::memory_order_relaxed);
    c_->remote_fraction_lost.store(b.fraction_lost / 256.0, std::memory_order_relaxed);
    c_->remote_packets_lost.store(b.cumulative_lost, std::memory_order_relaxed);
    c_->remote_jitter_ms.store(b.jitter / 48.0, std::memory_order_relaxed);
    if (b.lsr != 0) {
      // RFC 3550 section 6.4.1: RTT = A - LSR - DLSR, in 1/65536 s.
      const std::uint32_t a = rtp::ntp_compact(rtp::ntp_from_unix_ns(unix_ns()));
      const std::uint32_t rtt = a - b.lsr - b.dlsr;
      if (rtt < 0x80000000u) {
        c_->rtt_ms.store(rtt * 1000.0 / 65536.0, std::memory_order_relaxed);
      }
    }
  }
}

bool MediaCall::send_datagram(const std::uint8_t* data, std::size_t len) {
  for (;;) {
    const ssize_t n =
        sendto(fd_, data, len, MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&config_.remote),
               config_.remote_len);
    if (n >= 0) {
      c_->bytes_sent.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
      return true;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
      c_->send_would_block.fetch_add(1, std::memory_order_relaxed);
    } else {
      c_->send_errors.fetch_add(1, std::memory_order_relaxed);
    }
    return false;
  }
}

void MediaCall::send_packet(const UplinkPacketInfo& info, std::int64_t now_ns) {
  const std::uint16_t seq = static_cast<std::uint16_t>(info.seq + config_.seq_offset);
  const std::uint32_t ts = info.timestamp + config_.timestamp_offset;
  const std::uint64_t ntp = rtp::ntp_from_unix_ns(unix_ns());
  const auto abs_send_time = static_cast<std::uint32_t>((ntp >> 14) & 0xFFFFFF);
  std::size_t len = rtp::write_rtp(
      packet_.data(), packet_.size() - kSrtpMaxOverhead, config_.payload_type, first_packet_, seq,
      ts, config_.ssrc, config_.extensions, abs_send_time, 127, false, payload_.data(), info.bytes);
  if (len == 0 || tx_->protect(packet_.data(), len, packet_.size()) != 0) {
    c_->protect_errors.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  first_packet_ = false;
  last_rtp_timestamp_ = ts;
  last_send_ns_ = now_ns;
  if (send_datagram(packet_.data(), len)) {
    c_->packets_sent.fetch_add(1, std::memory_order_relaxed);
    c_->payload_bytes_sent.fetch_add(info.bytes, std::memory_order_relaxed);
  }
}

std::int64_t MediaCall::next_report_delay_ns() {
  std::uniform_real_distribution<double> factor(0.5, 1.5);
  return static_cast<std::int64_t>(config_.rtcp_interval_ms * factor(rng_) * 1e6);
}

void MediaCall::send_report(std::int64_t now_ns) {
  rtp::SenderInfo sender;
  const bool sending = c_->packets_sent.load(std::memory_order_relaxed) > 0;
  if (sending) {
    sender.ntp = rtp::ntp_from_unix_ns(unix_ns());
    const double since_s = static_cast<double>(now_ns - last_send_ns_) / 1e9;
    sender.rtp_timestamp =
        last_rtp_timestamp_ + static_cast<std::uint32_t>(std::max(0.0, since_s) * 48000.0);
    sender.packets = static_cast<std::uint32_t>(c_->packets_sent.load(std::memory_order_relaxed));
    sender.octets =
        static_cast<std::uint32_t>(c_->payload_bytes_sent.load(std::memory_order_relaxed));
  }
  rtp::ReportBlock block;
  const bool with_block = have_source_ && reception_.any();
  if (with_block) {
    std::uint32_t dlsr = 0;
    if (last_sr_arrival_ns_ != 0) {
      dlsr = static_cast<std::uint32_t>(static_cast<double>(now_ns - last_sr_arrival_ns_) / 1e9 *
                                        65536.0);
    }
    reception_.make_block(block, last_sr_arrival_ns_ != 0 ? last_sr_compact_ : 0, dlsr);
  }
  std::size_t len = rtp::write_report(
      report_.data(), report_.size() - kSrtpMaxOverhead, config_.ssrc, sending ? &sender : nullptr,
      with_block ? &block : nullptr, config_.cname.data(), config_.cname.size());
  if (len == 0 || tx_->protect_rtcp(report_.data(), len, report_.size()) != 0) {
    c_->protect_errors.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (send_datagram(report_.data(), len)) c_->rtcp_sent.fetch_add(1, std::memory_order_relaxed);
}

std::int64_t MediaCall::service(std::int64_t now_ns) {
  std::int64_t wake = now_ns + kIdleWakeNs;
  if (uplink_ != nullptr) {
    const int hint = loss_hint_.load(std::memory_order_acquire);
    if (hint >= 0 && hint != applied_loss_hint_) {
      TryClaim claim(uplink_busy_);
      if (claim.owned()) {
        uplink_->set_packet_loss_perc(hint);
        applied_loss_hint_ = hint;
        c_->loss_hint_applied.store(hint, std::memory_order_relaxed);
      }
    }
    if (send_open()) {
      std::int64_t due = uplink_->next_due_ns();
      if (due == std::numeric_limits<std::int64_t>::min() || now_ns >= due) {
        TryClaim claim(uplink_busy_);
        if (claim.owned()) {
          UplinkPacketInfo info;
          while (uplink_->pop_due(now_ns, payload_.data(), payload_.size(), info)) {
            send_packet(info, now_ns);
          }
        } else {
          c_->uplink_contention.fetch_add(1, std::memory_order_relaxed);
        }
        due = uplink_->next_due_ns();
        // A frame partly here waits a little for the rest: ask again in a millisecond.
        if (due == std::numeric_limits<std::int64_t>::min() || due <= now_ns) {
          due = now_ns + kMs;
        }
      }
      wake = std::min(wake, due);
    }
  }
  if (next_report_ns_ == 0) next_report_ns_ = now_ns + next_report_delay_ns() / 2;
  if (now_ns >= next_report_ns_) {
    send_report(now_ns);
    next_report_ns_ = now_ns + next_report_delay_ns();
  }
  return std::min(wake, next_report_ns_);
}

// ------------------------------------------------------------------------------- MediaEngine

struct MediaEngine::Worker {
  std::vector<std::shared_ptr<MediaCall> > calls;  // guarded by the engine's mu_
  std::uint64_t epoch = 0;                         // bumped by every add/remove
  std::uint64_t seen_epoch = 0;                    // the epoch of the thread's current snapshot
  std::atomic<bool> dirty{false};
  bool stop = false;
  bool running = false;
  std::thread thread;
  int wake[2] = {-1, -1};  // open while the thread runs
};

MediaEngine& MediaEngine::instance() {
  // Never destroyed: calls may still be removed by Python finalizers at interpreter exit.
  static MediaEngine* engine = new MediaEngine();
  return *engine;
}

MediaEngine::MediaEngine(std::size_t threads) {
  if (threads == 0) {
    threads = std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, 4);
  }
  for (std::size_t i = 0; i < threads; ++i) workers_.push_back(std::make_unique<Worker>());
}

MediaEngine::~MediaEngine() {
  std::unique_lock<std::mutex> lifecycle(lifecycle_mu_);
  std::unique_lock<std::mutex> lock(mu_);
  for (auto& w : workers_) {
    w->calls.clear();
    stop_locked(*w, lock);
  }
}

void MediaEngine::wake(Worker& w) {
  const std::uint8_t one = 1;
  if (w.wake[1] >= 0) (void)!write(w.wake[1], &one, 1);
}

void MediaEngine::add(const std::shared_ptr<MediaCall>& call) {
  if (!call) throw std::invalid_argument("MediaEngine.add: no call");
  std::lock_guard<std::mutex> lifecycle(lifecycle_mu_);
  std::unique_lock<std::mutex> lock(mu_);
  Worker* best = nullptr;
  for (auto& w : workers_) {
    if (std::find(w->calls.begin(), w->calls.end(), call) != w->calls.end()) return;
    if (best == nullptr || w->calls.size() < best->calls.size()) best = w.get();
  }
  Worker& w = *best;
  if (!w.running) {
    // The wake-up pipe lives as long as the thread: an idle process holds no descriptor.
    if (pipe(w.wake) != 0 || !set_nonblocking(w.wake[0]) || !set_nonblocking(w.wake[1])) {
      const int err = errno;
      for (int& fd : w.wake) {
        if (fd >= 0) close(fd);
        fd = -1;
      }
      throw std::runtime_error(std::string("MediaEngine: cannot create a wake-up pipe: ") +
                               std::strerror(err));
    }
    fcntl(w.wake[0], F_SETFD, FD_CLOEXEC);
    fcntl(w.wake[1], F_SETFD, FD_CLOEXEC);
  }
  w.calls.push_back(call);
  ++w.epoch;
  w.dirty.store(true, std::memory_order_release);
  if (!w.running) {
    w.stop = false;
    w.running = true;
    ++threads_started_;
    w.thread = std::thread([this, &w] { run(w); });
  }
  lock.unlock();
  wake(w);
}

void MediaEngine::remove(const std::shared_ptr<MediaCall>& call) {
  std::lock_guard<std::mutex> lifecycle(lifecycle_mu_);
  std::unique_lock<std::mutex> lock(mu_);
  for (auto& wp : workers_) {
    Worker& w = *wp;
    const auto it = std::find(w.calls.begin(), w.calls.end(), call);
    if (it == w.calls.end()) continue;
    w.calls.erase(it);
    const std::uint64_t target = ++w.epoch;
    w.dirty.store(true, std::memory_order_release);
    if (w.calls.empty()) {
      stop_locked(w, lock);
      return;
    }
    lock.unlock();
    wake(w);
    lock.lock();
    cv_.wait(lock, [&] { return w.seen_epoch >= target || !w.running; });
    return;
  }
}

void MediaEngine::stop_locked(Worker& w, std::unique_lock<std::mutex>& lock) {
  if (!w.running) return;
  w.stop = true;
  lock.unlock();
  wake(w);
  if (w.thread.joinable()) w.thread.join();
  lock.lock();
  w.running = false;
  for (int& fd : w.wake) {
    if (fd >= 0) close(fd);
    fd = -1;
  }
}

MediaEngineStats MediaEngine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  MediaEngineStats s;
  for (const auto& w : workers_) {
    s.calls += w->calls.size();
    if (w->running) {
      s.running = true;
      ++s.threads;
    }
  }
  s.max_threads = workers_.size();
  s.loops = loops_.load(std::memory_order_relaxed);
  s.threads_started = threads_started_;
  return s;
}

void MediaEngine::run(Worker& w) {
  std::vector<std::shared_ptr<MediaCall> > calls;
  std::vector<pollfd> fds;
  for (;;) {
    if (w.dirty.exchange(false, std::memory_order_acq_rel)) {
      std::unique_lock<std::mutex> lock(mu_);
      if (w.stop) break;
      calls = w.calls;
      w.seen_epoch = w.epoch;
      lock.unlock();
      cv_.notify_all();
      fds.assign(calls.size() + 1, pollfd{});
      fds[0].fd = w.wake[0];
      fds[0].events = POLLIN;
      for (std::size_t i = 0; i < calls.size(); ++i) {
        fds[i + 1].fd = calls[i]->fd();
        fds[i + 1].events = POLLIN;
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (w.stop) break;
    }
    loops_.fetch_add(1, std::memory_order_relaxed);
    std::int64_t now = steady_ns();
    std::int64_t wake_at = now + kIdleWakeNs;
    for (const auto& call : calls) wake_at = std::min(wake_at, call->service(now));
    const std::int64_t wait_ns = wake_at - steady_ns();
    // poll() counts milliseconds: round up, so that the wake-up is never early.
    const int timeout_ms =
        wait_ns <= 0 ? 0 : static_cast<int>(std::min<std::int64_t>((wait_ns + kMs - 1) / kMs, 50));
    const int ready = poll(fds.data(), static_cast<nfds_t>(fds.size()), timeout_ms);
    if (ready <= 0) continue;
    if (fds[0].revents & POLLIN) {
      std::uint8_t sink[64];
      while (read(w.wake[0], sink, sizeof(sink)) > 0) {
      }
    }
    now = steady_ns();
    for (std::size_t i = 0; i < calls.size(); ++i) {
      if (fds[i + 1].revents & (POLLIN | POLLERR)) calls[i]->on_readable(now);
    }
  }
  // Let go of the calls before saying so.
  calls.clear();
  std::lock_guard<std::mutex> lock(mu_);
  w.seen_epoch = w.epoch;
  cv_.notify_all();
}

}  // namespace rtvoice

#endif  // POSIX
