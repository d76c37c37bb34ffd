// SHA-256 (OpenSSL libcrypto behind a small class).
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>

namespace ks {

class Sha256 {
public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void update(std::span<const std::byte> data);
  void update(const std::string& data);
  // Lowercase hex digest; the object is spent afterwards.
  std::string hex_digest();

private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

std::string sha256_hex(std::span<const std::byte> data);
std::string sha256_hex(const std::string& data);

} // namespace ks
