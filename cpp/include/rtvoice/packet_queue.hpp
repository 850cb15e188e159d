// Lock-free single-producer single-consumer queue of RTP payloads in preallocated slots.
//
// Threading: push() on the producer thread (the network side), front()/pop() on the consumer
// thread (the playout side); counters from any thread. Never blocks, locks or allocates after
// construction. A full queue or an oversized payload drops the packet and counts it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "rtvoice/spsc_ring.hpp"

namespace rtvoice {

struct QueuedPacket {
  std::uint16_t seq = 0;
  std::uint32_t timestamp = 0;
  std::int64_t arrival_ns = 0;
  std::uint32_t bytes = 0;
  const std::uint8_t* payload = nullptr;
};

class PacketQueue {
 public:
  PacketQueue(std::size_t capacity_packets, std::size_t max_payload_bytes)
      : capacity_(capacity_packets),
        mask_(capacity_packets - 1),
        max_payload_(max_payload_bytes),
        meta_(capacity_packets),
        payloads_(capacity_packets * max_payload_bytes) {
    if (capacity_packets < 2 || (capacity_packets & (capacity_packets - 1)) != 0) {
      throw std::invalid_argument("packet queue capacity must be a power of two >= 2");
    }
    if (max_payload_bytes == 0 || max_payload_bytes > 65536) {
      throw std::invalid_argument("max payload must be between 1 and 65536 bytes");
    }
  }

  std::size_t capacity() const { return capacity_; }
  std::size_t max_payload_bytes() const { return max_payload_; }

  // Producer thread. Copies the payload; returns false (and counts why) when it was dropped.
  bool push(std::uint16_t seq, std::uint32_t timestamp, const std::uint8_t* payload,
            std::size_t bytes, std::int64_t arrival_ns) {
    if (bytes > max_payload_) {
      dropped_oversized_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    const std::uint64_t w = write_.load(std::memory_order_relaxed);
    if (w - cached_read_ >= capacity_) {
      cached_read_ = read_.load(std::memory_order_acquire);
      if (w - cached_read_ >= capacity_) {
        dropped_full_.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
    }
    const std::size_t slot = static_cast<std::size_t>(w) & mask_;
    QueuedPacket& m = meta_[slot];
    m.seq = seq;
    m.timestamp = timestamp;
    m.arrival_ns = arrival_ns;
    m.bytes = static_cast<std::uint32_t>(bytes);
    m.payload = payloads_.data() + slot * max_payload_;
    if (bytes != 0) std::memcpy(payloads_.data() + slot * max_payload_, payload, bytes);
    write_.store(w + 1, std::memory_order_release);
    pushed_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  // Consumer thread: the oldest packet, or nullptr. Valid until pop().
  const QueuedPacket* front() {
    const std::uint64_t r = read_.load(std::memory_order_relaxed);
    if (r == cached_write_) {
      cached_write_ = write_.load(std::memory_order_acquire);
      if (r == cached_write_) return nullptr;
    }
    return &meta_[static_cast<std::size_t>(r) & mask_];
  }

  // Consumer thread.
  void pop() { read_.store(read_.load(std::memory_order_relaxed) + 1, std::memory_order_release); }

  // Consumer thread: drops everything queued now; returns how many.
  std::size_t clear() {
    std::size_t n = 0;
    while (front() != nullptr) {
      pop();
      ++n;
    }
    return n;
  }

  std::uint64_t pushed() const { return pushed_.load(std::memory_order_relaxed); }
  std::uint64_t dropped_full() const { return dropped_full_.load(std::memory_order_relaxed); }
  std::uint64_t dropped_oversized() const {
    return dropped_oversized_.load(std::memory_order_relaxed);
  }

 private:
  const std::size_t capacity_;
  const std::size_t mask_;
  const std::size_t max_payload_;
  std::vector<QueuedPacket> meta_;
  std::vector<std::uint8_t> payloads_;

  alignas(kCacheLine) std::atomic<std::uint64_t> write_{0};
  std::uint64_t cached_read_ = 0;
  std::atomic<std::uint64_t> pushed_{0};
  std::atomic<std::uint64_t> dropped_full_{0};
  std::atomic<std::uint64_t> dropped_oversized_{0};

  alignas(kCacheLine) std::atomic<std::uint64_t> read_{0};
  std::uint64_t cached_write_ = 0;
};

}  // namespace rtvoice
