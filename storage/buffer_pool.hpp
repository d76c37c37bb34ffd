// Reusable chunk buffers. The vmstate pipeline handles chunk-sized buffers for every chunk in
// flight; fresh ones would cost a zero-fill and a page fault per 4 KiB every time (over a
// hundred thousand faults for a 1 GiB guest). Buffers go back here once written and are
// handed out again at their old size, so the pipeline touches the same memory throughout.
#pragma once

#include "storage/zstd_codec.hpp"

#include <algorithm>
#include <mutex>
#include <vector>

namespace ks {

class BufferPool {
public:
  // Every buffer handed out can hold at least CAPACITY bytes without growing (a chunk, or
  // its zstd frame bound), so buffers are never reallocated as chunk sizes vary.
  explicit BufferPool(size_t capacity) : m_capacity(capacity) {}

  // A buffer of SIZE bytes; its contents are unspecified.
  Bytes get(size_t size) {
    Bytes b;
    {
      std::lock_guard lock(m_mutex);
      if (!m_free.empty()) {
        b = std::move(m_free.back());
        m_free.pop_back();
      }
    }
    b.reserve(std::max(size, m_capacity));
    b.resize(size); // no zero-fill (UninitAllocator), no reallocation within the capacity
    return b;
  }

  // Takes B back for reuse (a moved-from or small buffer is dropped).
  void put(Bytes&& b) {
    if (b.capacity() < m_capacity) {
      return;
    }
    std::lock_guard lock(m_mutex);
    if (m_free.size() < k_max_free) {

      m_free.push_back(std::move(b));
    }
  }

private:
  static constexpr size_t k_max_free = 32; // more than a pipeline ever has in flight
  size_t m_capacity;
  std::mutex m_mutex;

  std::vector<Bytes> m_free;
};

} // namespace ks
