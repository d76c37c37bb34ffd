// The cryptographic primitives of encrypted snapshots (storage/sealing.hpp), over OpenSSL's
// libcrypto: random bytes, HKDF and HMAC with SHA-256, AES-256-GCM in place and as a stream,
// X25519 and PEM keys, base64. Nothing here knows about archives.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace ks {

using Key32 = std::array<unsigned char, 32>;
using Nonce12 = std::array<unsigned char, 12>;
inline constexpr size_t k_gcm_tag_size = 16;

// Bytes from the kernel's CSPRNG (via OpenSSL); throws when none can be had.
void random_fill(std::span<unsigned char> out);
template <size_t N>
std::array<unsigned char, N> random_array() {
  std::array<unsigned char, N> a{};
  random_fill(a);
  return a;
}

// HKDF-SHA256 (RFC 5869) of IKM with SALT and INFO, 32 bytes.
Key32 hkdf(std::span<const unsigned char> ikm, std::string_view salt, std::string_view info);
// HMAC-SHA256 of DATA under KEY.
Key32 hmac(std::span<const unsigned char> key, std::string_view data);

// AES-256-GCM of DATA in place; the 16-byte tag goes to TAG.
void gcm_seal(const Key32& key, const Nonce12& nonce, std::string_view ad, std::span<std::byte> data,
              std::span<unsigned char, k_gcm_tag_size> tag);
// Decrypts DATA in place; false (DATA then garbage) when TAG does not authenticate it.
bool gcm_open(const Key32& key, const Nonce12& nonce, std::string_view ad, std::span<std::byte> data,
              std::span<const unsigned char, k_gcm_tag_size> tag);

// AES-256-GCM in pieces, in place: for a member too large to hold (a share's tar). When
// opening, plaintext comes out before the tag is checked: check() says whether it was
// genuine.
class GcmStream {
public:
  enum class Mode { seal, open };
  GcmStream(const Key32& key, const Nonce12& nonce, std::string_view ad, Mode mode);
  ~GcmStream();
  GcmStream(const GcmStream&) = delete;
  GcmStream& operator=(const GcmStream&) = delete;
  void update(std::span<std::byte> data);
  std::array<unsigned char, k_gcm_tag_size> tag();                // Mode::seal, after the last piece
  bool check(std::span<const unsigned char, k_gcm_tag_size> tag); // Mode::open

private:
  void* m_ctx; // EVP_CIPHER_CTX
};

// A PEM key: Ed25519 for signatures, X25519 for encryption.
enum class KeyType { ed25519, x25519 };
struct PemKey {
  std::shared_ptr<void> pkey; // EVP_PKEY
  bool is_private = false;
};
// Reads a PEM private key from PATH, or (PUBLIC_OK) a public one; nullopt-like empty pkey
// when the file is not a PEM key of TYPE. Throws (usage) when PATH cannot be read.
PemKey read_pem_key(const std::string& path, KeyType type, bool public_ok);
// The raw 32-byte public half of an Ed25519 or X25519 key.
Key32 raw_public_key(const PemKey& key);
// X25519: a fresh key pair's (private, public); the shared secret of a private key (raw or
// PEM) and a peer's raw public key. Throws when the result is degenerate (all zero).
struct X25519Pair {
  std::shared_ptr<void> pkey;
  Key32 public_key{};
};
X25519Pair x25519_generate();
Key32 x25519_shared(const std::shared_ptr<void>& private_key, const Key32& peer_public);

std::string base64(std::span<const unsigned char> data);
// Decodes standard base64 of exactly OUT.size() bytes; false when TEXT is not that.
bool base64_decode(std::string_view text, std::span<unsigned char> out);
// Decodes standard base64 of any length; nullopt when TEXT is not base64.
std::optional<std::string> base64_decode(std::string_view text);
std::string hex(std::span<const unsigned char> data);

template <size_t N>
std::span<const unsigned char> bytes_of(const std::array<unsigned char, N>& a) {
  return std::span<const unsigned char>(a.data(), N);
}

} // namespace ks
