// One direction of SRTP/SRTCP (RFC 3711) on libsrtp2, keyed from DTLS-SRTP (RFC 5764).
// A session belongs to one thread (the media thread); the key is wiped when it is destroyed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace rtvoice {

// The DTLS-SRTP protection profiles (RFC 5764, RFC 7714), by their IANA numbers.
enum class SrtpProfile : int {
  Aes128CmSha1_80 = 1,
  AeadAes128Gcm = 7,
  AeadAes256Gcm = 8,
};

// Bytes an SRTP/SRTCP packet may grow by when protected (tag, SRTCP index).
inline constexpr std::size_t kSrtpMaxOverhead = 16 + 4 + 128;

// Master key + master salt length of a profile, or 0 for one that is not known.
std::size_t srtp_key_salt_length(SrtpProfile profile);
// Whether the libsrtp2 this core is linked with can create sessions of this profile (the AES-GCM
// profiles need a libsrtp2 built with a crypto library).
bool srtp_profile_supported(SrtpProfile profile);
std::string srtp_profile_name(SrtpProfile profile);
// The libsrtp2 version string.
std::string srtp_library_version();

class SrtpSession {
 public:
  enum class Direction { Outbound, Inbound };
  // key_salt: master key then master salt, srtp_key_salt_length(profile) bytes. Throws
  // std::invalid_argument for a wrong length or an unsupported profile.
  SrtpSession(SrtpProfile profile, const std::uint8_t* key_salt, std::size_t len,
              Direction direction);
  ~SrtpSession();
  SrtpSession(const SrtpSession&) = delete;
  SrtpSession& operator=(const SrtpSession&) = delete;

  // In place: len is updated; capacity must leave kSrtpMaxOverhead bytes. Return 0 on success,
  // else libsrtp2's error status (nothing is sent or delivered then).
  int protect(std::uint8_t* packet, std::size_t& len, std::size_t capacity);
  int protect_rtcp(std::uint8_t* packet, std::size_t& len, std::size_t capacity);
  int unprotect(std::uint8_t* packet, std::size_t& len);
  int unprotect_rtcp(std::uint8_t* packet, std::size_t& len);

 private:
  void* ctx_ = nullptr;  // srtp_t
};

}  // namespace rtvoice
