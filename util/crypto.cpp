#include "util/crypto.hpp"

#include "util/error.hpp"

#include <algorithm>
#include <cstdio>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

namespace ks {

namespace {

[[noreturn]] void crypto_failed(const char* what) {
  throw Error(std::string("the cryptographic library failed: ") + what);
}

std::shared_ptr<void> own(EVP_PKEY* key) {
  return {key, [](void* k) { EVP_PKEY_free(static_cast<EVP_PKEY*>(k)); }};
}

EVP_PKEY* pkey(const std::shared_ptr<void>& key) {
  return static_cast<EVP_PKEY*>(key.get());
}

EVP_CIPHER_CTX* gcm_context(const Key32& key, const Nonce12& nonce, std::string_view ad, int encrypt) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int len = 0;
  if (ctx == nullptr ||
      EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(), nonce.data(), encrypt) != 1 ||
      EVP_CipherUpdate(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(ad.data()),
                       static_cast<int>(ad.size())) != 1) {
    EVP_CIPHER_CTX_free(ctx);
    crypto_failed("AES-256-GCM setup");
  }
  return ctx;
}

// EVP_CipherUpdate takes an int length: large data goes in pieces.
void gcm_update(EVP_CIPHER_CTX* ctx, std::span<std::byte> data) {
  constexpr size_t k_step = 1u << 30;
  for (size_t at = 0; at < data.size(); at += k_step) {
    size_t n = std::min(k_step, data.size() - at);
    auto* p = reinterpret_cast<unsigned char*>(data.data() + at);
    int len = 0;
    if (EVP_CipherUpdate(ctx, p, &len, p, static_cast<int>(n)) != 1 || static_cast<size_t>(len) != n) {
      crypto_failed("AES-256-GCM");
    }
  }
}

EVP_CIPHER_CTX* ctx_of(void* p) {
  return static_cast<EVP_CIPHER_CTX*>(p);
}

} // namespace

void random_fill(std::span<unsigned char> out) {
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) {
    crypto_failed("no random bytes");
  }
}

Key32 hkdf(std::span<const unsigned char> ikm, std::string_view salt, std::string_view info) {
  Key32 out{};
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  EVP_KDF_CTX* ctx = kdf != nullptr ? EVP_KDF_CTX_new(kdf) : nullptr;
  EVP_KDF_free(kdf);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
    OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<unsigned char*>(ikm.data()), ikm.size()),
    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<char*>(salt.data()), salt.size()),
    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()), info.size()),
    OSSL_PARAM_construct_end()};
  bool ok = ctx != nullptr && EVP_KDF_derive(ctx, out.data(), out.size(), params) == 1;
  EVP_KDF_CTX_free(ctx);
  if (!ok) {
    crypto_failed("HKDF-SHA256");
  }
  return out;
}

Key32 hmac(std::span<const unsigned char> key, std::string_view data) {
  Key32 out{};
  size_t len = 0;
  if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
                reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), out.size(),
                &len) == nullptr ||
      len != out.size()) {
    crypto_failed("HMAC-SHA256");
  }
  return out;
}

void gcm_seal(const Key32& key, const Nonce12& nonce, std::string_view ad, std::span<std::byte> data,
              std::span<unsigned char, k_gcm_tag_size> tag) {
  GcmStream s(key, nonce, ad, GcmStream::Mode::seal);
  s.update(data);
  auto t = s.tag();
  std::copy(t.begin(), t.end(), tag.begin());
}

bool gcm_open(const Key32& key, const Nonce12& nonce, std::string_view ad, std::span<std::byte> data,
              std::span<const unsigned char, k_gcm_tag_size> tag) {
  GcmStream s(key, nonce, ad, GcmStream::Mode::open);
  s.update(data);
  return s.check(tag);
}

GcmStream::GcmStream(const Key32& key, const Nonce12& nonce, std::string_view ad, Mode mode)
  : m_ctx(gcm_context(key, nonce, ad, mode == Mode::seal ? 1 : 0)) {}

GcmStream::~GcmStream() {
  EVP_CIPHER_CTX_free(ctx_of(m_ctx));
}

void GcmStream::update(std::span<std::byte> data) {
  gcm_update(ctx_of(m_ctx), data);
}

std::array<unsigned char, k_gcm_tag_size> GcmStream::tag() {
  std::array<unsigned char, k_gcm_tag_size> tag{};
  int len = 0;
  if (EVP_EncryptFinal_ex(ctx_of(m_ctx), nullptr, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx_of(m_ctx), EVP_CTRL_GCM_GET_TAG, k_gcm_tag_size, tag.data()) != 1) {
    crypto_failed("AES-256-GCM");
  }
  return tag;
}

bool GcmStream::check(std::span<const unsigned char, k_gcm_tag_size> tag) {
  unsigned char t[k_gcm_tag_size];
  std::copy(tag.begin(), tag.end(), t);
  int len = 0;
  return EVP_CIPHER_CTX_ctrl(ctx_of(m_ctx), EVP_CTRL_GCM_SET_TAG, k_gcm_tag_size, t) == 1 &&
         EVP_DecryptFinal_ex(ctx_of(m_ctx), nullptr, &len) == 1;
}

PemKey read_pem_key(const std::string& path, KeyType type, bool public_ok) {
  int want = type == KeyType::ed25519 ? EVP_PKEY_ED25519 : EVP_PKEY_X25519;
  auto read = [&](bool is_private) -> EVP_PKEY* {
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr) {
      throw Error("cannot read the key file " + path, ExitCode::usage);
    }
    EVP_PKEY* k = is_private ? PEM_read_PrivateKey(f, nullptr, nullptr, nullptr)
                             : PEM_read_PUBKEY(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    if (k != nullptr && EVP_PKEY_id(k) != want) {
      EVP_PKEY_free(k);
      k = nullptr;
    }
    return k;
  };
  PemKey key;
  if (EVP_PKEY* k = read(true)) {
    key.pkey = own(k);
    key.is_private = true;
  } else if (public_ok) {
    if (EVP_PKEY* p = read(false)) {
      key.pkey = own(p);
    }
  }
  return key;
}

Key32 raw_public_key(const PemKey& key) {
  Key32 out{};
  size_t len = out.size();
  if (EVP_PKEY_get_raw_public_key(pkey(key.pkey), out.data(), &len) != 1 || len != out.size()) {
    crypto_failed("reading a public key");
  }
  return out;
}

X25519Pair x25519_generate() {
  EVP_PKEY* k = EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519");
  if (k == nullptr) {
    crypto_failed("X25519 key generation");
  }
  X25519Pair p{own(k), {}};
  p.public_key = raw_public_key(PemKey{p.pkey, true});
  return p;
}

Key32 x25519_shared(const std::shared_ptr<void>& private_key, const Key32& peer_public) {
  EVP_PKEY* peer =
    EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer_public.data(), peer_public.size());
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new(pkey(private_key), nullptr);
  Key32 out{};
  size_t len = out.size();
  // OpenSSL refuses an all-zero result (a low-order peer point) in EVP_PKEY_derive.
  bool ok = peer != nullptr && ctx != nullptr && EVP_PKEY_derive_init(ctx) == 1 &&
            EVP_PKEY_derive_set_peer(ctx, peer) == 1 && EVP_PKEY_derive(ctx, out.data(), &len) == 1 &&
            len == out.size();
  EVP_PKEY_CTX_free(ctx);
  EVP_PKEY_free(peer);
  if (!ok) {
    throw Error("an X25519 key agreement failed (a malformed public key)", ExitCode::archive_invalid);
  }
  return out;
}

std::string base64(std::span<const unsigned char> data) {
  std::string out(4 * ((data.size() + 2) / 3), '\0');
  EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data.data(), static_cast<int>(data.size()));
  return out;
}

bool base64_decode(std::string_view text, std::span<unsigned char> out) {
  if (text.size() != 4 * ((out.size() + 2) / 3)) {
    return false;
  }
  std::string buf(text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(buf.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  size_t pad = 0;
  for (size_t i = text.size(); i > 0 && text[i - 1] == '='; --i) {
    ++pad;
  }
  if (n < 0 || static_cast<size_t>(n) - pad != out.size()) {
    return false;
  }
  std::copy_n(reinterpret_cast<const unsigned char*>(buf.data()), out.size(), out.begin());
  return true;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    return std::nullopt;
  }
  size_t pad = 0;
  for (size_t i = text.size(); i > 0 && pad < 2 && text[i - 1] == '='; --i) {
    ++pad;
  }
  std::string out(text.size() / 4 * 3 - pad, '\0');
  if (!base64_decode(text, std::span(reinterpret_cast<unsigned char*>(out.data()), out.size()))) {
    return std::nullopt;
  }
  return out;
}

std::string hex(std::span<const unsigned char> data) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * data.size());
  for (unsigned char c : data) {
    out += k_digits[c >> 4];
    out += k_digits[c & 15];
  }
  return out;
}

} // namespace ks
