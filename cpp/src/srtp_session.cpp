#include "rtvoice/srtp_session.hpp"

#include <srtp2/srtp.h>

#include <climits>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace rtvoice {
namespace {

std::once_flag g_init_once;
srtp_err_status_t g_init_status = srtp_err_status_ok;

void ensure_init() {
  std::call_once(g_init_once, [] { g_init_status = srtp_init(); });
  if (g_init_status != srtp_err_status_ok) {
    throw std::runtime_error("libsrtp2 failed to initialize (status " +
                             std::to_string(static_cast<int>(g_init_status)) + ")");
  }
}

bool known(SrtpProfile p) {
  return p == SrtpProfile::Aes128CmSha1_80 || p == SrtpProfile::AeadAes128Gcm ||
         p == SrtpProfile::AeadAes256Gcm;
}

// Creates a session into ctx; returns libsrtp2's status.
srtp_err_status_t create(SrtpProfile profile, const std::uint8_t* key, bool outbound, srtp_t* ctx) {
  srtp_policy_t policy;
  std::memset(&policy, 0, sizeof(policy));
  const auto p = static_cast<srtp_profile_t>(static_cast<int>(profile));
  srtp_err_status_t status = srtp_crypto_policy_set_from_profile_for_rtp(&policy.rtp, p);
  if (status != srtp_err_status_ok) return status;
  status = srtp_crypto_policy_set_from_profile_for_rtcp(&policy.rtcp, p);
  if (status != srtp_err_status_ok) return status;
  policy.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
  policy.key = const_cast<unsigned char*>(key);
  policy.window_size = 1024;
  policy.allow_repeat_tx = 1;
  policy.next = nullptr;
  return srtp_create(ctx, &policy);
}

int clamp_len(std::size_t len) { return len > INT_MAX ? INT_MAX : static_cast<int>(len); }

}  // namespace

std::size_t srtp_key_salt_length(SrtpProfile profile) {
  if (!known(profile)) return 0;
  const auto p = static_cast<srtp_profile_t>(static_cast<int>(profile));
  return srtp_profile_get_master_key_length(p) + srtp_profile_get_master_salt_length(p);
}

bool srtp_profile_supported(SrtpProfile profile) {
  if (!known(profile)) return false;
  ensure_init();
  std::vector<std::uint8_t> key(srtp_key_salt_length(profile), 0x5A);
  srtp_t ctx = nullptr;
  const bool ok = create(profile, key.data(), true, &ctx) == srtp_err_status_ok;
  if (ctx != nullptr) srtp_dealloc(ctx);
  return ok;
}

std::string srtp_profile_name(SrtpProfile profile) {
  switch (profile) {
    case SrtpProfile::Aes128CmSha1_80:
      return "SRTP_AES128_CM_SHA1_80";
    case SrtpProfile::AeadAes128Gcm:
      return "SRTP_AEAD_AES_128_GCM";
    case SrtpProfile::AeadAes256Gcm:
      return "SRTP_AEAD_AES_256_GCM";
  }
  return "unknown";
}

std::string srtp_library_version() {
  const char* v = srtp_get_version_string();
  return v != nullptr ? v : "";
}

SrtpSession::SrtpSession(SrtpProfile profile, const std::uint8_t* key_salt, std::size_t len,
                         Direction direction) {
  if (!known(profile)) throw std::invalid_argument("unknown SRTP protection profile");
  const std::size_t want = srtp_key_salt_length(profile);
  if (key_salt == nullptr || len != want) {
    throw std::invalid_argument(srtp_profile_name(profile) + " needs " + std::to_string(want) +
                                " bytes of master key and salt, got " + std::to_string(len));
  }
  ensure_init();
  // libsrtp2 copies the key into its session; the copy here is wiped at once.
  std::vector<std::uint8_t> key(key_salt, key_salt + len);
  srtp_t ctx = nullptr;
  const srtp_err_status_t status =
      create(profile, key.data(), direction == Direction::Outbound, &ctx);
  std::memset(key.data(), 0, key.size());
  if (status != srtp_err_status_ok) {
    if (ctx != nullptr) srtp_dealloc(ctx);
    throw std::invalid_argument("libsrtp2 cannot create a " + srtp_profile_name(profile) +
                                " session (status " + std::to_string(static_cast<int>(status)) +
                                ")");
  }
  ctx_ = ctx;
}

SrtpSession::~SrtpSession() {
  if (ctx_ != nullptr) srtp_dealloc(static_cast<srtp_t>(ctx_));
}

int SrtpSession::protect(std::uint8_t* packet, std::size_t& len, std::size_t capacity) {
  if (len + kSrtpMaxOverhead > capacity) return static_cast<int>(srtp_err_status_bad_param);
  int n = clamp_len(len);
  const srtp_err_status_t s = srtp_protect(static_cast<srtp_t>(ctx_), packet, &n);
  if (s == srtp_err_status_ok) len = static_cast<std::size_t>(n);
  return static_cast<int>(s);
}

int SrtpSession::protect_rtcp(std::uint8_t* packet, std::size_t& len, std::size_t capacity) {
  if (len + kSrtpMaxOverhead > capacity) return static_cast<int>(srtp_err_status_bad_param);
  int n = clamp_len(len);
  const srtp_err_status_t s = srtp_protect_rtcp(static_cast<srtp_t>(ctx_), packet, &n);
  if (s == srtp_err_status_ok) len = static_cast<std::size_t>(n);
  return static_cast<int>(s);
}

int SrtpSession::unprotect(std::uint8_t* packet, std::size_t& len) {
  if (len < 12) return static_cast<int>(srtp_err_status_bad_param);
  int n = clamp_len(len);
  const srtp_err_status_t s = srtp_unprotect(static_cast<srtp_t>(ctx_), packet, &n);
  if (s == srtp_err_status_ok) len = static_cast<std::size_t>(n);
  return static_cast<int>(s);
}

int SrtpSession::unprotect_rtcp(std::uint8_t* packet, std::size_t& len) {
  if (len < 8) return static_cast<int>(srtp_err_status_bad_param);
  int n = clamp_len(len);
  const srtp_err_status_t s = srtp_unprotect_rtcp(static_cast<srtp_t>(ctx_), packet, &n);
  if (s == srtp_err_status_ok) len = static_cast<std::size_t>(n);
  return static_cast<int>(s);
}

}  // namespace rtvoice
