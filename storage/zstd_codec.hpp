// zstd frames for vmstate chunks; zstd.h stays inside zstd_codec.cpp.
#pragma once

#include <cstddef>
#include <cstring>
#include <functional>

#include <memory>
#include <span>
#include <utility>
#include <vector>

namespace ks {

// Buffers of 2 MiB and more are 2 MiB-aligned, their whole 2 MiB pages marked for transparent
// huge pages: the first touch of a chunk buffer then costs one page fault per 2 MiB instead
// of 512 (faults are expensive in a VM, and save and load touch tens of MiB of new buffers).
void* allocate_buffer(size_t bytes);
void free_buffer(void* p) noexcept;

// std::allocator that leaves new elements uninitialized: a chunk buffer is always filled
// before it is read, and zero-filling megabytes per chunk is measurable on the load path.
template <class T>
struct UninitAllocator : std::allocator<T> {
  T* allocate(size_t n) { return static_cast<T*>(allocate_buffer(n * sizeof(T))); }
  void deallocate(T* p, size_t) noexcept { free_buffer(p); }

  template <class U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <class U>
  UninitAllocator(const UninitAllocator<U>&) noexcept {}
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    if constexpr (sizeof...(Args) == 0) {
      ::new (static_cast<void*>(p)) U;
    } else {
      ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
  }
};

using Bytes = std::vector<std::byte, UninitAllocator<std::byte>>;

// Appends DATA to OUT in one copy. Not insert() or a range constructor: through an allocator
// of its own, the standard library constructs each byte on its own, a loop that cost a
// registry pull a sixth of its CPU.
inline void append(Bytes& out, std::span<const std::byte> data) {
  size_t at = out.size();
  out.resize(at + data.size());
  if (!data.empty()) {
    std::memcpy(out.data() + at, data.data(), data.size());
  }
}

// A copy of DATA (see append).
inline Bytes bytes_of(std::span<const std::byte> data) {
  Bytes out;
  append(out, data);
  return out;
}

// One independent zstd frame with the content size and zstd's content checksum, into OUT
// (resized to fit; pass a reused buffer to avoid fresh allocations).
void zstd_compress(std::span<const std::byte> data, int level, Bytes& out);

// The largest frame zstd_compress can make of SIZE bytes.
size_t zstd_frame_bound(size_t size);

// Decompresses one frame of at most MAX_SIZE bytes into OUT (resized to the content size);
// throws on a corrupt frame.
void zstd_decompress(std::span<const std::byte> frame, size_t max_size, Bytes& out);

// Decompresses one frame of at most MAX_SIZE bytes in pieces of PIECE.size() bytes, handing
// each to SINK as soon as it is ready (the piece stays in cache on its way to a consumer);
// throws on a corrupt frame. Returns the content size.
size_t zstd_decompress_pieces(std::span<const std::byte> frame, size_t max_size, Bytes& piece,
                              const std::function<void(std::span<const std::byte>)>& sink);

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
