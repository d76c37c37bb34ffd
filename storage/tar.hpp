// A thin pax-tar layer over libarchive; archive.h stays inside tar.cpp.
#pragma once

#include "storage/entry_io.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace ks {

class TarWriter : public EntrySink {
public:
  // Writes to FD (a file or a pipe); FD stays owned by the caller.
  explicit TarWriter(int fd, std::string what);
  ~TarWriter() override;
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;

  // A regular file member, mode 0600, with ATTRS in its pax header.
  void add(const std::string& name, std::span<const std::byte> data, const TarAttrs& attrs) override;
  // The same, for a member written in pieces: begin(), write()*, and SIZE must match.
  void begin(const std::string& name, uint64_t size, const TarAttrs& attrs, StreamCheck check) override;
  void write(std::span<const std::byte> data) override;
  void close() override;
  void start_writeback() override;

  // Also writes a directory entry (mode 0700) before the first member under each directory,
  // as `tar -c` of a tree does: tools such as checkpointctl look for the directory itself.
  // Readers skip directory entries (TarReader::next).
  void write_directories(bool on);

private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

// Called with each entry's name ("." for the directory itself, "./a/b" below it) and the
// lstat() taken before its data was read.
using TreeEntrySeen = std::function<void(const std::string& name, const struct stat& st)>;

// A directory tree as a zstd-compressed pax tar written to OUT_FD: modes, owners, xattrs,
// hard links, sparse files; symlinks are stored as links, never followed, and other mounted
// filesystems below DIR are not entered. Returns the number of entries.
uint64_t write_tree_tar_zst(const std::string& dir, int out_fd, int level, const TreeEntrySeen& seen = {});

// The same for ENTRIES of DIR only (names as TreeEntrySeen gives them), none descended into.
uint64_t write_entries_tar_zst(const std::string& dir, const std::vector<std::string>& entries, int out_fd,
                               int level);

// Extracts a zstd-compressed tar read through SOURCE (returns 0 at end) into DIR, which must
// exist. Refuses absolute paths, ".." and writing through symlinks. Returns the entry count.
using ByteSource = std::function<size_t(std::span<std::byte>)>;
uint64_t extract_tar_zst(const ByteSource& source, const std::string& dir, const std::string& what);

class TarReader : public EntrySource {
public:
  // Reads from FD (a file or a pipe).
  explicit TarReader(int fd, std::string what);
  ~TarReader() override;
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  using Entry = ArchiveEntry;
  // The next member's header; false at the end of the archive. Throws (exit 3) on damage.
  bool next(Entry& entry) override;
  // Reads member data; returns 0 at the end of the member.
  size_t read(std::span<std::byte> buf) override;

private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

} // namespace ks
