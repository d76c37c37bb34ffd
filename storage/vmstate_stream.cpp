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

  OrderedPool<Bytes> pool(o.threads, pool_capacity(o.threads));
  StreamStats stats;
  std::optional<Bytes> held; // the newest decompressed chunk, written once the next arrives
  auto emit = [&](Bytes data) {
    if (stats.chunks == 0 && on_first_chunk) {
      on_first_chunk(data);
    }
    ++stats.chunks;
    if (held && out_fd >= 0) {
      write_all(out_fd, *held, "the migration stream to QEMU");
    }
    if (held) {
      buffers.put(std::move(*held));
    }
    stats.raw_bytes += data.size();
    if (o.progress) {
      o.progress->store(stats.raw_bytes);
    }
    held = std::move(data);
  };
  size_t max_chunk = std::max<size_t>(o.chunk_size, 256u << 20);
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
    pool.submit([&reader, &buffers, m, max_chunk] {
      reader.check_member(*m); // no byte reaches QEMU before its hash matched
      Bytes out = buffers.get(0);
      zstd_decompress(m->data, max_chunk, out);
      buffers.put(std::move(m->data));
      return out;
    });

  }
  while (!pool.empty()) {
    emit(pool.take_next());
  }
  // index.json checked (reader.next() returned nullopt): release the last chunk.
  if (held && out_fd >= 0) {
    write_all(out_fd, *held, "the migration stream to QEMU");
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
