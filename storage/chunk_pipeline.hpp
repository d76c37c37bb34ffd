// Pieces shared by the vmstate pipelines (vmstate_stream.cpp, vmstate_channels.cpp): a
// compressed chunk on its way into the archive, and the bounds on what is in flight.
#pragma once

#include "storage/archive_reader.hpp"
#include "storage/archive_writer.hpp"
#include "storage/buffer_pool.hpp"
#include "storage/zstd_codec.hpp"
#include "util/blake3.hpp"
#include "util/sha256.hpp"

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <string>

namespace ks {

struct CompressedChunk {
  Bytes frame;
  std::string sha256;
  std::string name;                   // the archive member it becomes
  std::string raw_hash;               // BLAKE3 of the uncompressed bytes, when the writer wants it
  std::optional<StoredMember> stored; // already in the repository: FRAME is empty
  std::optional<MemberKey> key;       // an encrypted snapshot's: FRAME (or STORED) is sealed with it
};

// An encrypted snapshot's chunk C: FRAME sealed in place, or, when the repository holds it,
// the key it was sealed with; RAW_HASH becomes the tag the repository finds it by.
inline void seal_chunk(CompressedChunk& c, const Sealer& sealer) {
  c.key = c.stored ? sealer.chunk_key(c.raw_hash) : sealer.seal(c.frame, c.raw_hash);
  if (!c.raw_hash.empty()) {
    c.raw_hash = sealer.raw_tag(c.raw_hash);
  }
  if (!c.stored) {
    c.sha256 = sha256_hex(c.frame);
  }
}

inline constexpr size_t k_piece_size = 128u << 10; // decompressed pieces: fit in L2 next to QEMU

// What the chunk buffers of one pipeline may take, whatever the thread count: every job in
// flight holds a chunk and its frame (about 2 x CHUNK_SIZE). Measured: a save with 16
// workers and no bound peaked at 411 MiB.
inline constexpr size_t k_chunk_memory_budget = 128u << 20;

// Small chunks in flight, whatever the thread count: workers keep reading and hashing while
// the writer spends a moment on one chunk (a repository save creating a blob file), where
// two per worker would have them wait. 16 x 1 MiB chunks: the repository's size; an 8 MiB
// chunk gets no more than before.
inline constexpr size_t k_chunk_lookahead = 16u << 20;

// Jobs in flight on THREADS workers: two per worker (one worked on, one done and waiting
// for its turn) or k_chunk_lookahead of chunks if that is more, but no more than the budget
// left after HELD bytes of other buffers (a multifd save's partial chunk per connection)
// allows, and at least 2.
inline size_t chunk_pool_capacity(unsigned threads, size_t chunk_size, size_t held = 0) {
  size_t by_threads =
    std::max(2 * static_cast<size_t>(threads) + 1, k_chunk_lookahead / std::max<size_t>(chunk_size, 1));
  size_t left = k_chunk_memory_budget > held ? k_chunk_memory_budget - held : 0;
  size_t by_memory = left / (2 * std::max<size_t>(chunk_size, 1));
  return std::max<size_t>(2, std::min(by_threads, by_memory));
}

// The chunk whose raw bytes have BLAKE3 hash RAW when the repository behind WRITER holds it
// (none otherwise): nothing to compress or write, its layer points at the stored blob.
inline std::optional<CompressedChunk> stored_chunk(const std::string& raw, const ArchiveWriter& writer) {
  const Sealer* sealer = writer.sealer();
  std::optional<StoredMember> stored = writer.find_raw(sealer ? sealer->raw_tag(raw) : raw);
  if (!stored) {
    return std::nullopt;
  }
  // No frame, and no buffer for one: the chunk buffer a worker just gave back is the one it
  // takes again for its next chunk, still in its cache.
  CompressedChunk c{Bytes(), stored->sha256, {}, raw, stored, std::nullopt};
  if (sealer) {
    seal_chunk(c, *sealer);
  }
  return c;
}

// A worker's job: compresses and hashes CHUNK, whose buffer goes back to BUFFERS, and seals
// it in an encrypted snapshot. Into a repository, CHUNK's own BLAKE3 first: a chunk the
// repository holds (an unchanged part of the guest's memory) is neither compressed nor
// written again. BLAKE3: as collision resistant as SHA-256 and faster, because the guest
// chooses these bytes and no crafted collision may stand in for another chunk. RAW_HASH,
// when given, is CHUNK's, already computed.
inline CompressedChunk compress_chunk(const std::shared_ptr<Bytes>& chunk, int level, BufferPool& buffers,
                                      std::string name, const ArchiveWriter& writer,
                                      std::string raw_hash = {}) {
  std::string raw;
  if (writer.wants_raw_hashes()) {
    raw = raw_hash.empty() ? blake3_hex(*chunk) : std::move(raw_hash);
    if (auto c = stored_chunk(raw, writer)) {
      buffers.put(std::move(*chunk));
      c->name = std::move(name);
      return std::move(*c);
    }
  }
  const Sealer* sealer = writer.sealer();
  CompressedChunk c{buffers.get(0), {}, std::move(name), std::move(raw), std::nullopt, std::nullopt};
  zstd_compress(*chunk, level, c.frame);
  buffers.put(std::move(*chunk));
  if (sealer) {
    seal_chunk(c, *sealer);
  } else {
    c.sha256 = sha256_hex(c.frame);
  }
  return c;
}

// Writes C into the archive and gives its buffer back.
inline void add_chunk(ArchiveWriter& writer, CompressedChunk&& c, BufferPool& buffers, uint64_t written) {
  if (c.stored) {
    writer.add_stored(c.name, *c.stored, c.raw_hash, c.key ? &*c.key : nullptr);
    buffers.put(std::move(c.frame));
    return;
  }
  writer.add_member(c.name, c.frame, c.sha256, c.raw_hash, c.key ? &*c.key : nullptr);
  buffers.put(std::move(c.frame));
  if (written % 4 == 0) {
    writer.start_writeback(); // let the kernel write behind us: a steady stream, no burst at fsync
  }
}

// A reader's member buffers come from this pool while a pipeline runs; declared before the
// pipeline's threads, so it outlives them.
class ReaderBuffers {
public:
  ReaderBuffers(ArchiveReader& reader, size_t chunk_size)
    : m_reader(reader), m_pool(zstd_frame_bound(chunk_size)) {
    m_reader.use_buffers(&m_pool);
  }
  ~ReaderBuffers() { m_reader.use_buffers(nullptr); }
  ReaderBuffers(const ReaderBuffers&) = delete;
  ReaderBuffers& operator=(const ReaderBuffers&) = delete;

  BufferPool& pool() { return m_pool; }

private:
  ArchiveReader& m_reader;
  BufferPool m_pool;
};

// Adds BYTES to a progress counter shared with other threads.

inline void add_progress(std::atomic<uint64_t>* progress, uint64_t bytes) {
  if (progress) {
    progress->fetch_add(bytes, std::memory_order_relaxed);
  }
}

} // namespace ks
