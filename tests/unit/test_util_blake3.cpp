#include "util/blake3.hpp"

#include <catch2/catch.hpp>
#include <cstring>
#include <vector>

using namespace ks;

namespace {

std::span<const std::byte> bytes(const char* s) {
  return std::as_bytes(std::span(s, std::strlen(s)));
}

} // namespace

TEST_CASE("blake3: the published test vectors") {
  CHECK(blake3_hex(bytes("")) == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
  CHECK(blake3_hex(bytes("abc")) == "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
}

TEST_CASE("blake3: pieces of any size hash as the whole (a chunk copied in pieces)") {
  std::vector<std::byte> data((1u << 20) + 4099);
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = static_cast<std::byte>((i * 2654435761u) >> 13);
  }
  std::string whole = blake3_hex(data);
  for (size_t piece : {1u, 1000u, 1024u, 65536u, 65537u}) {
    Blake3 h;
    for (size_t at = 0; at < data.size(); at += piece) {
      h.update(std::span(data).subspan(at, std::min(piece, data.size() - at)));
    }
    CHECK(h.hex_digest() == whole);
  }
  data[data.size() / 2] ^= std::byte{1};
  CHECK(blake3_hex(data) != whole);
}
