// Writes an archive: manifest.json first, then vmstate chunks and shares, index.json last,
// into a .ksnap tar or any other EntrySink (a repository).
#pragma once

#include "storage/entry_io.hpp"
#include "storage/manifest.hpp"
#include "storage/sealing.hpp"
#include "storage/zstd_codec.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace ks {

class ArchiveWriter {
public:
  // A .ksnap tar into FD (a file or a pipe; FD stays the caller's).
  ArchiveWriter(int fd, std::string what, const Json& manifest);
  ArchiveWriter(std::unique_ptr<EntrySink> sink, const Json& manifest);
  // manifest.json's exact bytes: with SEALER, an encrypted snapshot (the manifest holds
  // SEALER's header), whose members are sealed as they are added; or, for a copy, the bytes
  // read from another archive with the header attributes that travel with them (CARRIED).
  struct ManifestText {
    std::string text;
    std::shared_ptr<const Sealer> sealer = {};
    TarAttrs carried = {};
  };
  ArchiveWriter(std::unique_ptr<EntrySink> sink, const ManifestText& manifest);

  // Adds a finished member (its SHA-256 goes in the pax header and in the index). RAW_HASH,
  // the hash of a chunk's uncompressed bytes, is kept where the sink wants it. An encrypted
  // snapshot's member comes sealed, with its KEY (Sealer::seal), or is sealed here.
  void add_member(const std::string& name, std::span<const std::byte> data, const std::string& sha256,
                  const std::string& raw_hash = {}, const MemberKey* key = nullptr);
  // Adds a member of SIZE bytes read from FD (a large one, such as a share capture). An
  // encrypted snapshot's is sealed in place first: FD must be a writable regular file.
  void add_member_from_fd(const std::string& name, int fd, uint64_t size, const std::string& sha256);
  // Adds a member of SIZE bytes in pieces: begin_member(), write_member()*. A copy's member,
  // whose header attributes CARRIED (k_member_key_attr) travel with it. CHECK: whether the
  // sink checks its SHA-256, or its source does (EntrySink::begin).
  void begin_member(const std::string& name, uint64_t size, const std::string& sha256, StreamCheck check,
                    const std::string& raw_hash = {}, const TarAttrs& carried = {});
  void write_member(std::span<const std::byte> data);
  // Writes index.json and completes the archive. Without this the archive is incomplete.
  // SIGN, if given, returns the signature of index.json's exact bytes (util/signature.hpp),
  // kept in its header.
  // CARRIED: a copy's index.json header attributes (k_mac_attr).
  using IndexSigner = std::function<std::string(const std::string& index_text)>;
  void finish(const Json& extra_index_fields = Json::object(), const IndexSigner& sign = {},
              const TarAttrs& carried = {});

  // An encrypted snapshot's sealer, or nullptr.
  const Sealer* sealer() const { return m_sealer.get(); }

  // Whether chunks' raw hashes are wanted, and a stored chunk with raw hash RAW_HASH,
  // which add_stored() then records without compressing or writing it again.
  bool wants_raw_hashes() const { return m_sink->wants_raw_hashes(); }
  std::optional<StoredMember> find_raw(const std::string& raw_hash) const {
    return m_sink->find_raw(raw_hash);
  }
  void add_stored(const std::string& name, const StoredMember& stored, const std::string& raw_hash,
                  const MemberKey* key = nullptr);

  uint64_t bytes_written() const { return m_bytes; } // members' bytes, stored ones included
  uint64_t bytes_stored() const { return m_stored; } // of which already stored before

  // For a regular file: start writeback of what is written so far (without waiting), so the
  // final fsync has little left to do. Called every few chunks.
  void start_writeback() { m_sink->start_writeback(); }

private:
  void record(const std::string& name, uint64_t size, const std::string& sha256);
  // A member's header attributes; sealed with KEY in an encrypted snapshot.
  TarAttrs attrs(const std::string& name, const std::string& sha256, const std::string& raw_hash,
                 const MemberKey* key) const;

  std::unique_ptr<EntrySink> m_sink;
  std::shared_ptr<const Sealer> m_sealer;
  std::string m_manifest_sha256;
  int m_format_version;

  Json m_members = Json::array();
  uint64_t m_bytes = 0;
  uint64_t m_stored = 0;
  uint64_t m_open_left = 0; // bytes still to come of the member begun
};

} // namespace ks
