// zstd frames for vmstate chunks; zstd.h stays inside zstd_codec.cpp.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace ks {

using Bytes = std::vector<std::byte>;

// One independent zstd frame with the content size and zstd's content checksum.
Bytes zstd_compress(std::span<const std::byte> data, int level);

// Decompresses one frame of at most MAX_SIZE bytes; throws on a corrupt frame.
Bytes zstd_decompress(std::span<const std::byte> frame, size_t max_size);

// Streaming compression into a sink (for share trees of unknown size).
class ZstdStream {
public:
  using Sink = void (*)(void* ctx, std::span<const std::byte> out);
  ZstdStream(int level, Sink sink, void* ctx);
  ~ZstdStream();
  ZstdStream(const ZstdStream&) = delete;
  ZstdStream& operator=(const ZstdStream&) = delete;
  void write(std::span<const std::byte> data);
  void finish();

private:
  struct Impl;
  Impl* m_impl;
};

} // namespace ks
