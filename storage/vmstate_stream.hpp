// The QEMU migration stream in and out of an archive, chunked, on parallel workers.
#pragma once

#include "storage/archive_reader.hpp"
#include "storage/archive_writer.hpp"
#include "storage/member_inbox.hpp"
#include "util/error.hpp"

#include <atomic>
#include <functional>

namespace ks {

// Thrown when the stream is given up because the caller set StreamOptions::abort (QEMU
// failed or was cancelled): QEMU's own reason is the one to report.
class StreamAbandoned : public Error {
public:
  StreamAbandoned() : Error("reading the vmstate was abandoned") {}
};

struct StreamOptions {
  size_t chunk_size = 8u << 20;
  int level = 1;
  unsigned threads = 2;
  std::atomic<uint64_t>* progress = nullptr; // raw stream bytes so far
  // read_vmstate into a regular file: leave all-zero ranges as holes (a mapped-ram file is
  // mostly the guest's untouched memory) and size the file at the end.
  bool sparse = false;
  const std::atomic<bool>* abort = nullptr; // read_vmstate stops (throws) when it turns true
  MemberInbox* inbox = nullptr;             // writers: members posted while they run
  uint64_t first_chunk = 0; // write_vmstate: the number of the first chunk (a later part of one series)
  // read_vmstate in place (sparse): chunk INDEX goes where PLACE puts it, instead of at
  // INDEX * chunk_size of the output file, which is then neither given nor sized.
  std::function<void(uint64_t index, std::span<const std::byte> data)> place;
  uint64_t header_chunk = 0; // read_vmstate: the chunk that on_first_chunk sees
};

struct StreamStats {
  uint64_t raw_bytes = 0;
  uint64_t chunks = 0;
};

// Reads the migration stream from IN_FD until end of file and writes it as vmstate chunks.
// A regular file is read from its current offset and its holes are not read at all: a chunk
// that lies in a hole is the same small, precomputed frame of zeros.
StreamStats write_vmstate(int in_fd, ArchiveWriter& writer, const StreamOptions& options);

// What to do with members that are not vmstate chunks (shares/...); called in archive order.
using OtherMember = std::function<void(ArchiveReader::Member&&)>;

// Reads the rest of the archive; each vmstate chunk is hash-checked, then decompressed on a
// worker, then written to OUT_FD in order (OUT_FD < 0: decompress and check only). The last
// chunk is held back until index.json has been checked, so a consumer such as QEMU never
// sees a complete stream from an incomplete or inconsistent archive.
// ON_FIRST_CHUNK sees the decompressed bytes of chunk header_chunk (the first one by
// default), to check the QEMU stream header; the archive must reach that chunk.
StreamStats read_vmstate(ArchiveReader& reader, int out_fd, const StreamOptions& options,
                         const OtherMember& other,
                         const std::function<void(std::span<const std::byte>)>& on_first_chunk = {});

// Default worker count when QEMU runs alongside: every core but one, which QEMU's migration
// thread needs (measured: on 2 cores one worker beats two). At least one.
unsigned default_stream_threads();

// Writes all of DATA at OFFSET of FD; zero ranges of 64 KiB and more are left as they are
// (holes in a new file).
void pwrite_sparse(int fd, std::span<const std::byte> data, uint64_t offset);

// Throws (exit 3) unless DATA starts with QEMU's migration stream header (QEVM, version 3).
void check_qemu_stream_header(std::span<const std::byte> data);

} // namespace ks
