// Non-finite samples (NaN, +-inf) are a policy of the core, not of a binding: every native entry
// point that takes float audio (Uplink::push, OpusEncoder::encode) replaces them with 0 and
// counts them, so one bad sample from an upstream stage never stops a stream or raises on a
// thread that cannot report it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace rtvoice {

// True when no value is NaN or infinite: an exponent of all ones marks both. An integer OR over
// the bit patterns vectorises, unlike a float reduction.
inline bool all_finite(const float* data, std::size_t count) {
  std::uint32_t special = 0;
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, data + i, sizeof bits);
    special |= static_cast<std::uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return special == 0;
}

// Copies count values from in to out with every non-finite value replaced by 0; returns how many
// were replaced. in and out may be the same buffer.
inline std::size_t copy_finite(const float* in, float* out, std::size_t count) {
  std::size_t replaced = 0;
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, in + i, sizeof bits);
    const bool special = (bits & 0x7f800000u) == 0x7f800000u;
    replaced += special ? 1 : 0;
    out[i] = special ? 0.0f : in[i];
  }
  return replaced;
}

}  // namespace rtvoice
