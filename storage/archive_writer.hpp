// Writes a .ksnap archive: manifest.json first, then vmstate chunks and shares, index.json last.
#pragma once

#include "storage/manifest.hpp"
#include "storage/tar.hpp"
#include "storage/zstd_codec.hpp"

#include <string>

namespace ks {

class ArchiveWriter {
public:
  ArchiveWriter(int fd, std::string what, const Json& manifest);

  // Adds a finished member (its SHA-256 goes in the pax header and in the index).
  void add_member(const std::string& name, std::span<const std::byte> data, const std::string& sha256);
  // Adds a member of SIZE bytes read from FD (a large one, such as a share capture).
  void add_member_from_fd(const std::string& name, int fd, uint64_t size, const std::string& sha256);
  // Writes index.json and the tar trailer. Without this the archive is incomplete.
  void finish(const Json& extra_index_fields = Json::object());

  uint64_t bytes_written() const { return m_bytes; }

  // For a regular file: start writeback of what is written so far (without waiting), so the
  // final fsync has little left to do. Called every few chunks.
  void start_writeback();

private:
  TarWriter m_tar;
  int m_fd;

  std::string m_manifest_sha256;
  int m_format_version;

  Json m_members = Json::array();
  uint64_t m_bytes = 0;
};

} // namespace ks
