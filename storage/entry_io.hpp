// Where an archive's members come from and go to: a .ksnap tar (TarReader, TarWriter), or
// the blobs of an OCI image layout (storage/store/). ArchiveReader and ArchiveWriter see
// only these interfaces.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>

namespace ks {

using TarAttrs = std::map<std::string, std::string>; // pax extended attributes (xattrs)

// One member's header: name, size and attributes (k_sha256_attr, k_raw_hash_attr).
struct ArchiveEntry {
  std::string name;
  uint64_t size = 0;
  TarAttrs attrs;
};

class EntrySource {
public:
  virtual ~EntrySource() = default;
  // The next member's header; false at the end. Throws (exit 3) on damage.
  virtual bool next(ArchiveEntry& entry) = 0;
  // Reads member data; returns 0 at the end of the member.
  virtual size_t read(std::span<std::byte> buf) = 0;
};

// A member already stored where the sink writes (a blob of an earlier snapshot).
struct StoredMember {
  std::string sha256; // of the stored (compressed) bytes
  uint64_t size = 0;
  bool operator==(const StoredMember&) const = default;
};

enum class StreamCheck { sink, source };

class EntrySink {
public:
  virtual ~EntrySink() = default;
  // A member written at once, or in pieces: begin(), write()*, where SIZE must match. A
  // member in pieces is checked against its SHA-256 by the sink, unless CHECK says that its
  // source does (a copy: the reader checks every member before the next one, and a sink
  // publishes nothing before the archive is complete).
  virtual void add(const std::string& name, std::span<const std::byte> data, const TarAttrs& attrs) = 0;
  virtual void begin(const std::string& name, uint64_t size, const TarAttrs& attrs, StreamCheck check) = 0;
  virtual void write(std::span<const std::byte> data) = 0;
  // After the last member (index.json): completes the archive.
  virtual void close() = 0;

  // Content-addressed sinks: the stored member whose uncompressed bytes have SHA-256 RAW
  // (then add_stored() records it without writing), and whether raw hashes are wanted.
  virtual bool wants_raw_hashes() const { return false; }
  virtual std::optional<StoredMember> find_raw(const std::string& /*raw_hash*/) const { return std::nullopt; }
  virtual void add_stored(const std::string& /*name*/, const StoredMember& /*stored*/,
                          const TarAttrs& /*attrs*/) {}
  // A file: start writeback of what is written so far (without waiting).
  virtual void start_writeback() {}
};

} // namespace ks
