#include "storage/vmstate_stream.hpp"

#include "storage/chunk_pipeline.hpp"
#include "storage/ordered_pool.hpp"
#include "util/blake3.hpp"
#include "util/cancel.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/sha256.hpp"

#include <cerrno>
#include <cstring>
#include <linux/magic.h>
#include <optional>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <thread>
#include <unistd.h>

namespace ks {

namespace {

using Compressed = CompressedChunk;

// A checked vmstate chunk on its way out: decompressed whole, still a frame, or already in
// place in a sparse output file.
struct Ready {
  bool whole = false;
  Bytes data;
  Bytes frame;
  size_t placed = 0; // bytes already in place in the output file (written, or a hole)
};

constexpr size_t k_hole_grain = 64u << 10; // the smallest run of zeros left as a hole

// SIZE zero bytes as a frame, compressed once per stream (and sealed, with SEALER).
Compressed zero_frame(size_t size, int level, const Sealer* sealer = nullptr) {
  Bytes zeros(size);
  std::memset(zeros.data(), 0, size);
  Compressed z;
  zstd_compress(zeros, level, z.frame);
  z.sha256 = sha256_hex(z.frame);
  z.raw_hash = blake3_hex(zeros);
  if (sealer) {
    seal_chunk(z, *sealer);
  }
  return z;
}

bool all_zero(std::span<const std::byte> d) {
  return d.empty() || (d[0] == std::byte{0} && std::memcmp(d.data(), d.data() + 1, d.size() - 1) == 0);
}

// True when [OFFSET, OFFSET + SIZE) of regular file FD is a hole (holds no data). FD's
// offset is OFFSET again afterwards.
bool is_hole(int fd, off_t offset, size_t size) {
  off_t data = ::lseek(fd, offset, SEEK_DATA);
  bool hole = data < 0 ? errno == ENXIO : data >= offset + static_cast<off_t>(size);
  if (::lseek(fd, offset, SEEK_SET) != offset) {
    throw Error(std::string("failed to seek in the migration stream: ") + std::strerror(errno));
  }
  return hole;
}

void seek_forward(int fd, size_t bytes, const char* what) {
  if (::lseek(fd, static_cast<off_t>(bytes), SEEK_CUR) < 0) {
    throw Error(std::string("failed to seek in ") + what + ": " + std::strerror(errno));
  }
}

void pwrite_all(int fd, std::span<const std::byte> data, uint64_t offset) {
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      throw Error(std::string("failed to write the vmstate: ") + (n < 0 ? std::strerror(errno) : "no space"));
    }
    data = data.subspan(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
}

// True for a regular file on tmpfs (a memfd, /dev/shm: a guest's shared RAM, a staging file).
bool in_memory(int fd) {
  struct statfs sfs {};
  return ::fstatfs(fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC;
}

// Reads exactly OUT.size() bytes of FD at OFFSET (a file that does not shrink under us).
void pread_exact(int fd, std::span<std::byte> out, uint64_t offset) {
  while (!out.empty()) {
    ssize_t n = ::pread(fd, out.data(), out.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      throw Error(std::string("failed to read the migration stream: ") +
                  (n < 0 ? std::strerror(errno) : "it ended early"));
    }
    out = out.subspan(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
}

// A copy of C (a frame of zeros made once per stream) in a buffer of BUFFERS.
Compressed copy_of(const Compressed& c, BufferPool& buffers) {
  Compressed out{buffers.get(0), c.sha256, {}, c.raw_hash, std::nullopt, c.key};
  append(out.frame, c.frame); // an empty buffer
  return out;
}

// A worker's job for a file in memory: reads SIZE bytes at OFFSET of FD itself (workers read
// in parallel) and compresses them (compress_chunk: into a repository, a chunk it holds
// costs one BLAKE3 pass over the copy and nothing else). A read, not a mapping: read(2)
// returns the zeros of a hole without allocating pages for them, where a read fault on a
// shared tmpfs mapping would fill the guest's untouched memory with real pages, and the
// copy costs less than the faults did (measured: 0.13 s against 0.16 s for 512 MiB).
// ZERO is the frame of a whole chunk of zeros (ZERO_SIZE bytes): an all-zero chunk of that
// size gets it without a hash.
Compressed compress_file_chunk(int fd, uint64_t offset, size_t size, int level, BufferPool& buffers,
                               const ArchiveWriter& writer, const Compressed& zero, size_t zero_size) {
  auto chunk = std::make_shared<Bytes>(buffers.get(size));
  pread_exact(fd, *chunk, offset);
  if (size == zero_size && all_zero(*chunk)) {
    buffers.put(std::move(*chunk));
    return copy_of(zero, buffers);
  }
  return compress_chunk(chunk, level, buffers, {}, writer);
}

} // namespace

void pwrite_sparse(int fd, std::span<const std::byte> data, uint64_t offset) {
  size_t run = 0; // start of the data not yet written
  for (size_t at = 0; at < data.size(); at += k_hole_grain) {
    auto slice = data.subspan(at, std::min(k_hole_grain, data.size() - at));
    if (all_zero(slice)) {
      pwrite_all(fd, data.subspan(run, at - run), offset + run);
      run = at + slice.size();
    }
  }
  pwrite_all(fd, data.subspan(run), offset + run);
}

StreamStats write_vmstate(int in_fd, ArchiveWriter& writer, const StreamOptions& o) {
  struct stat st {};
  off_t offset = ::lseek(in_fd, 0, SEEK_CUR);
  const bool file = offset >= 0 && ::fstat(in_fd, &st) == 0 && S_ISREG(st.st_mode);
  // From a file in memory (a memfd, tmpfs: a guest's shared RAM, a staging file) the workers
  // read their chunks themselves, in parallel, instead of this thread copying every byte
  // first.
  const bool parallel_reads = file && in_memory(in_fd);
  BufferPool buffers(zstd_frame_bound(o.chunk_size)); // first: it outlives the workers using it
  OrderedPool<Compressed> pool(o.threads, chunk_pool_capacity(o.threads, o.chunk_size));
  StreamStats stats;
  std::shared_ptr<const Compressed> zero;      // a whole chunk of zeros, made on first use
  std::shared_ptr<const Compressed> read_zero; // the same for chunks the workers read (always whole)
  auto count = [&](size_t bytes) {
    stats.raw_bytes += bytes;
    if (o.progress) {
      o.progress->store(stats.raw_bytes);
    }
  };
  auto write_next = [&] {
    Compressed c = pool.take_next();
    c.name = vmstate_member_name(o.first_chunk + stats.chunks++);
    add_chunk(writer, std::move(c), buffers, stats.chunks);
  };
  auto deliver_posted = [&] {
    if (o.inbox) {
      o.inbox->deliver(writer, [&] {
        while (!pool.empty()) {
          write_next();
        }
      });
    }
  };
  // The next N bytes of the file become one chunk's job, which does not need them read here.
  auto take = [&](size_t n) {
    offset += static_cast<off_t>(n);
    seek_forward(in_fd, n, "the migration stream");
    count(n);
    deliver_posted();
    if (pool.full()) {
      write_next();
    }
  };
  for (;;) {
    throw_if_cancelled();
    size_t left = file && offset < st.st_size ? static_cast<size_t>(st.st_size - offset) : 0;
    if (left > 0 && is_hole(in_fd, offset, std::min(left, o.chunk_size))) {
      size_t n = std::min(left, o.chunk_size);
      if (!zero || n < o.chunk_size) {
        zero = std::make_shared<const Compressed>(zero_frame(n, o.level, writer.sealer()));
      }
      take(n);
      pool.submit([&buffers, z = zero] { return copy_of(*z, buffers); });
      continue;
    }
    if (left > 0 && parallel_reads) {
      size_t n = std::min(left, o.chunk_size);
      auto at = static_cast<uint64_t>(offset);
      take(n);
      int level = o.level;
      if (!read_zero) {
        read_zero = std::make_shared<const Compressed>(zero_frame(o.chunk_size, o.level, writer.sealer()));
      }
      pool.submit([in_fd, at, n, level, &buffers, &writer, z = read_zero, size = o.chunk_size] {
        return compress_file_chunk(in_fd, at, n, level, buffers, writer, *z, size);
      });
      continue;
    }
    auto chunk = std::make_shared<Bytes>(buffers.get(o.chunk_size));
    size_t n = read_full(in_fd, *chunk, "the migration stream");
    offset += static_cast<off_t>(n);
    if (n == 0) {
      break;
    }
    chunk->resize(n);
    count(n);
    deliver_posted();
    if (pool.full()) {
      write_next();
    }
    int level = o.level;
    pool.submit(
      [chunk, level, &buffers, &writer] { return compress_chunk(chunk, level, buffers, {}, writer); });
    if (n < o.chunk_size) {
      break; // end of file
    }
  }
  deliver_posted();
  while (!pool.empty()) {
    write_next();
  }
  return stats;
}

StreamStats read_vmstate(ArchiveReader& reader, int out_fd, const StreamOptions& o, const OtherMember& other,
                         const std::function<void(std::span<const std::byte>)>& on_first_chunk) {
  ReaderBuffers reader_buffers(reader, o.chunk_size);
  BufferPool& buffers = reader_buffers.pool();

  // With one thread (2 cores: QEMU needs the other) this thread checks each chunk and
  // decompresses it in small pieces that go to OUT_FD while still in cache, as `zstd -dc`
  // does (measured: steadier than a separate worker, which made three busy threads on two
  // cores). With more, workers check and decompress whole chunks in parallel. The first
  // chunk is always decompressed whole, for ON_FIRST_CHUNK. Into a sparse file, the workers
  // also write each chunk in place (chunk N at N * chunk_size) and leave zeros as holes.
  const bool in_place = o.sparse && (out_fd >= 0 || o.place);
  const bool pieces = o.threads <= 1 && !in_place;

  StreamStats stats;
  Bytes piece = buffers.get(k_piece_size);
  auto count = [&](size_t bytes) {
    stats.raw_bytes += bytes;
    if (o.progress) {
      o.progress->store(stats.raw_bytes);
    }
  };
  auto write = [&](std::span<const std::byte> data) {
    if (out_fd >= 0) {
      write_all(out_fd, data, "the migration stream to QEMU");
    }
    count(data.size());
  };
  size_t max_chunk = std::max<size_t>(o.chunk_size, 256u << 20);
  auto write_ready = [&](Ready& r) {
    if (in_place) {
      count(r.placed);
      buffers.put(std::move(r.data));
    } else if (r.whole) {
      write(r.data);
      buffers.put(std::move(r.data));
    } else {
      zstd_decompress_pieces(r.frame, max_chunk, piece, write);
      buffers.put(std::move(r.frame));
    }
  };
  std::optional<Ready> held; // the newest checked chunk, written once the next one is ready
  bool short_chunk = false;  // in place, only the last chunk may be short of the chunk size
  auto emit = [&](Ready r) {
    if (short_chunk) {
      throw Error(reader.what() + ": a vmstate chunk other than the last is short of the chunk size",
                  ExitCode::archive_invalid);
    }
    short_chunk = in_place && r.placed < o.chunk_size;
    if (stats.chunks++ == o.header_chunk && on_first_chunk) {
      on_first_chunk(r.data);
    }
    if (held) {
      write_ready(*held);
    }
    held = std::move(r);
  };
  // In place, a chunk that is the frame of zeros this stream's compressor makes is a hole:
  // nothing to decompress or write (other frames of zeros are found when written).
  std::shared_ptr<const Compressed> zero;
  if (in_place) {
    zero = std::make_shared<const Compressed>(zero_frame(o.chunk_size, o.level));
  }
  auto prepare = [&, zero, max_chunk](const std::shared_ptr<ArchiveReader::Member>& m, uint64_t index,
                                      bool whole) {
    reader.check_member(*m); // no byte reaches QEMU before its hash matched
    Ready r{.whole = whole};
    if (zero && std::ranges::equal(m->data, zero->frame)) {
      r.placed = o.chunk_size;
    } else if (whole) {
      r.data = buffers.get(0);
      zstd_decompress(m->data, max_chunk, r.data);
      if (in_place) {
        if (r.data.size() > o.chunk_size) {
          throw Error(reader.what() + ": vmstate chunk " + std::to_string(index) +
                        " is larger than the manifest's chunk size",
                      ExitCode::archive_invalid);
        }
        if (o.place) {
          o.place(index, r.data);
        } else {
          pwrite_sparse(out_fd, r.data, index * o.chunk_size);
        }
        r.placed = r.data.size();
        if (index != o.header_chunk) {
          buffers.put(std::move(r.data)); // only the header's chunk is looked at again
        }
      }
    } else {
      r.frame = std::move(m->data);
      return r;
    }
    buffers.put(std::move(m->data));
    return r;
  };
  // After everything its jobs use (PREPARE, and the frame of zeros it holds): on an error the
  // pool goes first, and its workers finish their jobs while those are still there.
  OrderedPool<Ready> pool(o.threads, chunk_pool_capacity(o.threads, o.chunk_size));
  uint64_t submitted = 0;
  while (auto member = reader.next()) {
    throw_if_cancelled();
    if (o.abort && o.abort->load()) {
      throw StreamAbandoned();
    }
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
    uint64_t index = submitted++;
    bool whole = !pieces || index == o.header_chunk;
    if (pieces) {
      emit(prepare(m, index, whole)); // one thread for all: QEMU has the other core to itself
    } else {
      pool.submit([&prepare, m, index, whole] { return prepare(m, index, whole); });
    }
  }
  while (!pool.empty()) {
    emit(pool.take_next());
  }
  // index.json checked (reader.next() returned nullopt): release the last chunk.
  if (held) {
    write_ready(*held);
  }
  if (stats.chunks <= o.header_chunk) {
    throw Error(reader.what() +
                  (stats.chunks == 0 ? " holds no vmstate chunks" : " ends before its device state"),
                ExitCode::archive_invalid);
  }
  if (in_place && !o.place && ::ftruncate(out_fd, static_cast<off_t>(stats.raw_bytes)) != 0) {
    throw Error(std::string("failed to size the vmstate staging file: ") + std::strerror(errno));
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
