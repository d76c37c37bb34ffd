#include "util/blake3.hpp"

#include "util/crypto.hpp"

#include <blake3.h>

namespace ks {

struct Blake3::Impl {
  blake3_hasher hasher{};
};

Blake3::Blake3() : m_impl(std::make_unique<Impl>()) {
  blake3_hasher_init(&m_impl->hasher);
}

Blake3::~Blake3() = default;
Blake3::Blake3(Blake3&&) noexcept = default;
Blake3& Blake3::operator=(Blake3&&) noexcept = default;

void Blake3::update(std::span<const std::byte> data) {
  blake3_hasher_update(&m_impl->hasher, data.data(), data.size());
}

std::string Blake3::hex_digest() {
  unsigned char out[BLAKE3_OUT_LEN];
  blake3_hasher_finalize(&m_impl->hasher, out, sizeof out);
  return hex(out);
}

std::string blake3_hex(std::span<const std::byte> data) {
  Blake3 h;
  h.update(data);
  return h.hex_digest();
}

} // namespace ks
