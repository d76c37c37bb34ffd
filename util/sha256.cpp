#include "util/sha256.hpp"

#include "util/error.hpp"

#include <openssl/evp.h>

namespace ks {

struct Sha256::Impl {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
};

Sha256::Sha256() : m_impl(std::make_unique<Impl>()) {
  KS_ASSERT(m_impl->ctx && EVP_DigestInit_ex(m_impl->ctx.get(), EVP_sha256(), nullptr) == 1);
}

Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::update(std::span<const std::byte> data) {
  KS_ASSERT(EVP_DigestUpdate(m_impl->ctx.get(), data.data(), data.size()) == 1);
}

void Sha256::update(const std::string& data) {
  update(std::as_bytes(std::span(data.data(), data.size())));
}

std::string Sha256::hex_digest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  KS_ASSERT(EVP_DigestFinal_ex(m_impl->ctx.get(), md, &len) == 1);
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += digits[md[i] >> 4];
    out += digits[md[i] & 15];
  }
  return out;
}

std::string sha256_hex(std::span<const std::byte> data) {
  Sha256 h;
  h.update(data);
  return h.hex_digest();
}

std::string sha256_hex(const std::string& data) {
  return sha256_hex(std::as_bytes(std::span(data.data(), data.size())));
}

} // namespace ks
