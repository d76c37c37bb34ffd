// Reads an archive front to back, from a .ksnap file or pipe or from any other EntrySource
// (a repository), checking every member's SHA-256 against its header and, at the end,
// against index.json.
#pragma once

#include "storage/entry_io.hpp"
#include "storage/manifest.hpp"
#include "storage/sealing.hpp"
#include "storage/zstd_codec.hpp"
#include "util/fd.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace ks {

class BufferPool;

class ArchiveReader {
public:
  // Reads and validates manifest.json, which must be the first member: of the .ksnap tar
  // read from FD (which stays the caller's), or of SOURCE.
  ArchiveReader(int fd, const std::string& what);
  ArchiveReader(Fd fd, const std::string& what); // FD is the reader's
  ArchiveReader(std::unique_ptr<EntrySource> source, std::string what);

  const Json& manifest() const { return m_manifest; }
  const std::string& manifest_text() const { return m_manifest_text; } // its exact bytes
  // Header attributes a copy carries over: of manifest.json, and of index.json once read.
  TarAttrs carried_manifest_attrs() const { return carried(m_manifest_attrs); }
  TarAttrs carried_index_attrs() const { return carried(m_index_attrs); }
  static TarAttrs carried(const TarAttrs& attrs); // the MAC and a member's sealed key
  const std::string& what() const { return m_what; }

  // An encrypted snapshot (the manifest's `encryption`): without unlock(), members are read
  // and hash-checked as they are stored, sealed. unlock() checks KEY against the manifest's
  // recipients and the manifest's MAC (throws: usage for a key that is not a recipient, exit
  // 3 for damage, and exit 3 for a snapshot that is not encrypted at all, which no one may
  // substitute for an encrypted one); afterwards check_member() and stream_member() also open
  // each member, and index.json's MAC is checked.
  bool encrypted() const { return is_encrypted(m_manifest); }
  void unlock(const DecryptKey& key);
  const Opener* opener() const { return m_opener.get(); }

  // Members' data buffers come from POOL (nullptr: fresh ones), for the chunk pipeline.
  void use_buffers(BufferPool* pool) { m_buffers = pool; }

  struct Member {
    std::string name;
    std::string sha256;   // from the pax header
    std::string raw_hash; // a repository's chunks: the uncompressed bytes' BLAKE3, unchecked
    Bytes data;
    uint64_t position = 0;  // in the archive; manifest.json is 0
    std::string sealed_key; // an encrypted snapshot's: k_member_key_attr
    bool checked = false;   // check_member() done (and DATA opened)
  };
  // The next member up to (not including) index.json; nullopt once index.json has been read
  // and checked against every member seen. Member data is NOT hash-checked here: call
  // check_member() (possibly on a worker thread) before using it.
  std::optional<Member> next();

  // Throws (exit 3) when MEMBER's data does not match its recorded SHA-256, and, unlocked,
  // opens it in place (throws when its seal does not hold). Once per member.
  void check_member(Member& member) const;

  // Hands MEMBER back: the next call to next() returns it again.
  void unread(Member member);

  // For large members (shares): the next member's name if it starts with PREFIX, without
  // reading its data; nullopt otherwise (the member is then kept for next()).
  std::optional<std::string> next_if(const std::string& prefix);
  // Streams the data of the member next_if() returned into SINK, hashing it (and opening it,
  // once unlocked); throws (exit 3) after the last byte if it does not match its SHA-256 or
  // its seal.
  using Source = std::function<size_t(std::span<std::byte>)>;
  void stream_member(const std::function<void(const Source&)>& consume);
  // The header of the member next_if() returned (its size, its SHA-256).
  const ArchiveEntry& open_entry() const { return *m_open; }

  // index.json, once next() has returned nullopt: parsed, its exact bytes, and the signature
  // its header carries ("" when unsigned).
  const Json& index() const { return m_index; }
  const std::string& index_text() const { return m_index_text; }
  const std::string& index_signature() const { return m_index_signature; }
  // index.json must turn out to be TEXT (whose signature was checked before the load began).
  void expect_index(std::string text) { m_expected_index = std::move(text); }

private:
  void read_index(const ArchiveEntry& entry);
  ArchiveEntry next_entry();                       // throws when the archive ends before index.json
  bool finish_if_index(const ArchiveEntry& entry); // checks index.json when ENTRY is it
  Member read_member(const ArchiveEntry& entry);   // reads and records a member
  Bytes read_data(const ArchiveEntry& entry);

  std::optional<Member> m_pending;
  BufferPool* m_buffers = nullptr;

  bool m_index_done = false;
  std::optional<ArchiveEntry> m_open; // header read by next_if(), data not yet
  Fd m_fd;                            // when the reader owns it; outlives m_tar
  std::unique_ptr<EntrySource> m_tar;
  std::string m_what;
  Json m_manifest;
  std::string m_manifest_text;
  std::string m_manifest_sha256;
  TarAttrs m_manifest_attrs;
  TarAttrs m_index_attrs;
  std::unique_ptr<Opener> m_opener;
  Json m_seen = Json::array();
  Json m_index;
  std::string m_index_text;
  std::string m_index_signature;
  std::optional<std::string> m_expected_index;
};

} // namespace ks
