#include "storage/vmstate_stream.hpp"

#include "storage/buffer_pool.hpp"
#include "storage/ordered_pool.hpp"
#include "util/cancel.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/sha256.hpp"

#include <optional>
#include <thread>

namespace ks {

namespace {

struct Compressed {
  Bytes frame;
  std::string sha256;
};

// A checked vmstate chunk on its way out: decompressed whole, or still a frame.
struct Ready {
  bool whole = false;
  Bytes data;
  Bytes frame;
};

constexpr size_t k_piece_size = 128u << 10; // fits in L2 next to what QEMU reads

size_t pool_capacity(unsigned threads) {
  return 2 * static_cast<size_t>(threads) + 1;
}

} // namespace

StreamStats write_vmstate(int in_fd, ArchiveWriter& writer, const StreamOptions& o) {
  BufferPool buffers(zstd_frame_bound(o.chunk_size)); // first: it outlives the workers using it
  OrderedPool<Compressed> pool(o.threads, pool_capacity(o.threads));
  StreamStats stats;
  auto write_next = [&] {
    Compressed c = pool.take_next();
    writer.add_member(vmstate_member_name(stats.chunks++), c.frame, c.sha256);
    buffers.put(std::move(c.frame));
    if (stats.chunks % 4 == 0) {
      writer.start_writeback();
    }
  };
  for (;;) {
    auto chunk = std::make_shared<Bytes>(buffers.get(o.chunk_size));
    size_t n = read_full(in_fd, *chunk, "the migration stream");
    if (n == 0) {
      break;
    }
    chunk->resize(n);
    stats.raw_bytes += n;
    if (o.progress) {
      o.progress->store(stats.raw_bytes);
    }
    if (pool.full()) {
      write_next();
    }
    int level = o.level;
    pool.submit([chunk, level, &buffers] {
      Compressed c{buffers.get(0), {}};
      zstd_compress(*chunk, level, c.frame);
      buffers.put(std::move(*chunk));
      c.sha256 = sha256_hex(c.frame);
      return c;
    });
    if (n < o.chunk_size) {
      break; // end of file
    }
  }
  while (!pool.empty()) {
    write_next();
  }
  return stats;
}

StreamStats read_vmstate(ArchiveReader& reader, int out_fd, const StreamOptions& o, const OtherMember& other,
                         const std::function<void(std::span<const std::byte>)>& on_first_chunk) {
  BufferPool buffers(zstd_frame_bound(o.chunk_size)); // first: it outlives the workers using it
  reader.use_buffers(&buffers);

  struct Unhook {
    ArchiveReader& reader;
    ~Unhook() { reader.use_buffers(nullptr); }
  } unhook{reader};

  // With one thread (2 cores: QEMU needs the other) this thread checks each chunk and
  // decompresses it in small pieces that go to OUT_FD while still in cache, as `zstd -dc`
  // does (measured: steadier than a separate worker, which made three busy threads on two
  // cores). With more, workers check and decompress whole chunks in parallel. The first
  // chunk is always decompressed whole, for ON_FIRST_CHUNK.

  const bool pieces = o.threads <= 1;
  OrderedPool<Ready> pool(o.threads, pool_capacity(o.threads));
  StreamStats stats;
  Bytes piece = buffers.get(k_piece_size);
  auto write = [&](std::span<const std::byte> data) {
    if (out_fd >= 0) {
      write_all(out_fd, data, "the migration stream to QEMU");
    }
    stats.raw_bytes += data.size();
    if (o.progress) {
      o.progress->store(stats.raw_bytes);
    }
  };
  size_t max_chunk = std::max<size_t>(o.chunk_size, 256u << 20);
  auto write_ready = [&](Ready& r) {
    if (r.whole) {
      write(r.data);
      buffers.put(std::move(r.data));
    } else {
      zstd_decompress_pieces(r.frame, max_chunk, piece, write);
      buffers.put(std::move(r.frame));
    }
  };
  std::optional<Ready> held; // the newest checked chunk, written once the next one is ready
  auto emit = [&](Ready r) {
    if (stats.chunks++ == 0 && on_first_chunk) {
      on_first_chunk(r.data);
    }
    if (held) {
      write_ready(*held);
    }
    held = std::move(r);
  };
  auto prepare = [&reader, &buffers, max_chunk](const std::shared_ptr<ArchiveReader::Member>& m, bool whole) {
    reader.check_member(*m); // no byte reaches QEMU before its hash matched
    Ready r{.whole = whole};
    if (whole) {
      r.data = buffers.get(0);
      zstd_decompress(m->data, max_chunk, r.data);
      buffers.put(std::move(m->data));
    } else {
      r.frame = std::move(m->data);
    }
    return r;
  };
  uint64_t submitted = 0;
  while (auto member = reader.next()) {
    throw_if_cancelled();
    if (member->name.rfind(k_vmstate_prefix, 0) != 0) {
      while (!pool.empty()) {
        emit(pool.take_next());
      }
      other(std::move(*member));
      continue;
    }
    if (pool.full()) {
      emit(pool.take_next());
    }
    auto m = std::make_shared<ArchiveReader::Member>(std::move(*member));
    bool whole = !pieces || submitted++ == 0;
    if (pieces) {
      emit(prepare(m, whole)); // one thread for all: QEMU has the other core to itself
    } else {
      pool.submit([&prepare, m, whole] { return prepare(m, whole); });
    }
  }
  while (!pool.empty()) {
    emit(pool.take_next());
  }
  // index.json checked (reader.next() returned nullopt): release the last chunk.
  if (held) {
    write_ready(*held);
  }
  if (stats.chunks == 0) {
    throw Error(reader.what() + " holds no vmstate chunks", ExitCode::archive_invalid);
  }
  return stats;
}

unsigned default_stream_threads() {
  unsigned cores = std::thread::hardware_concurrency();
  return cores > 1 ? cores - 1 : 1;
}

void check_qemu_stream_header(std::span<const std::byte> d) {
  auto be32 = [&](size_t off) {
    return (std::to_integer<uint32_t>(d[off]) << 24) | (std::to_integer<uint32_t>(d[off + 1]) << 16) |
           (std::to_integer<uint32_t>(d[off + 2]) << 8) | std::to_integer<uint32_t>(d[off + 3]);
  };
  if (d.size() < 8 || be32(0) != 0x5145564d) {
    throw Error("the vmstate is not a QEMU migration stream (no QEVM magic)", ExitCode::archive_invalid);
  }
  if (be32(4) != 3) {
    throw Error("the QEMU migration stream has version " + std::to_string(be32(4)) + ", expected 3",
                ExitCode::archive_invalid);
  }
}

} // namespace ks
