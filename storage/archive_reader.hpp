// Reads a .ksnap archive front to back from a file or a pipe, checking every member's
// SHA-256 against its pax header and, at the end, against index.json.
#pragma once

#include "storage/manifest.hpp"
#include "storage/tar.hpp"
#include "storage/zstd_codec.hpp"

#include <optional>
#include <string>

namespace ks {

class ArchiveReader {
public:
  // Reads and validates manifest.json, which must be the first member.
  ArchiveReader(int fd, std::string what);

  const Json& manifest() const { return m_manifest; }
  const std::string& what() const { return m_what; }

  struct Member {
    std::string name;
    std::string sha256; // from the pax header
    Bytes data;
  };
  // The next member up to (not including) index.json; nullopt once index.json has been read
  // and checked against every member seen. Member data is NOT hash-checked here: call
  // check_member() (possibly on a worker thread) before using it.
  std::optional<Member> next();

  // Throws (exit 3) when MEMBER's data does not match its recorded SHA-256.
  void check_member(const Member& member) const;

private:
  void read_index(const TarReader::Entry& entry);
  Bytes read_data(const TarReader::Entry& entry);

  TarReader m_tar;
  std::string m_what;
  Json m_manifest;
  std::string m_manifest_sha256;
  Json m_seen = Json::array();
};

} // namespace ks
