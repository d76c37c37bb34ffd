#include "storage/tar.hpp"

#include "util/beneath.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <optional>
#include <set>
#include <sys/stat.h>
#include <vector>

namespace ks {

namespace {

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_free(a); }
};
struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using ArchivePtr = std::unique_ptr<archive, ArchiveDeleter>;
using EntryPtr = std::unique_ptr<archive_entry, EntryDeleter>;

std::string why(archive* a) {
  const char* s = archive_error_string(a);
  std::string text = s ? s : "unknown libarchive error";
  int err = archive_errno(a);
  if (err > 0 && text.find(std::strerror(err)) == std::string::npos) {
    text += std::string(" (") + std::strerror(err) + ")";
  }
  return text;
}

} // namespace

struct TarWriter::Impl {
  ArchivePtr a{archive_write_new()};
  int fd = -1;
  std::string what;
  bool closed = false;
  bool directories = false;
  std::set<std::string> dirs_written;

  [[noreturn]] void fail(const std::string& action) {
    throw Error("failed to write " + what + ": " + action + ": " + why(a.get()));
  }
};

void TarWriter::write_directories(bool on) {
  m_impl->directories = on;
}

TarWriter::TarWriter(int fd, std::string what) : m_impl(std::make_unique<Impl>()) {
  m_impl->what = std::move(what);
  m_impl->fd = fd;
  archive* a = m_impl->a.get();
  if (archive_write_set_format_pax(a) != ARCHIVE_OK ||
      archive_write_set_format_option(a, "pax", "xattrheader", "SCHILY") != ARCHIVE_OK ||
      archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
      archive_write_open_fd(a, fd) != ARCHIVE_OK) {
    m_impl->fail("setting up the tar writer");
  }
}

TarWriter::~TarWriter() = default;

void TarWriter::start_writeback() {
  // Fails harmlessly (ESPIPE, EINVAL) on pipes and filesystems without it.
  ::sync_file_range(m_impl->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

void TarWriter::begin(const std::string& name, uint64_t size, const TarAttrs& attrs, StreamCheck /*check*/) {
  for (size_t slash = name.find('/'); m_impl->directories && slash != std::string::npos;
       slash = name.find('/', slash + 1)) {
    std::string dir = name.substr(0, slash + 1);
    if (m_impl->dirs_written.insert(dir).second) {
      EntryPtr d(archive_entry_new());
      archive_entry_set_pathname(d.get(), dir.c_str());
      archive_entry_set_filetype(d.get(), AE_IFDIR);
      archive_entry_set_perm(d.get(), 0700);
      archive_entry_set_size(d.get(), 0);
      archive_entry_set_mtime(d.get(), std::time(nullptr), 0);
      if (archive_write_header(m_impl->a.get(), d.get()) != ARCHIVE_OK) {
        m_impl->fail(dir);
      }
    }
  }
  EntryPtr e(archive_entry_new());
  archive_entry_set_pathname(e.get(), name.c_str());
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_entry_set_perm(e.get(), 0600);
  archive_entry_set_size(e.get(), static_cast<la_int64_t>(size));
  archive_entry_set_mtime(e.get(), std::time(nullptr), 0);
  for (const auto& [k, v] : attrs) {
    archive_entry_xattr_add_entry(e.get(), k.c_str(), v.data(), v.size());
  }
  if (archive_write_header(m_impl->a.get(), e.get()) != ARCHIVE_OK) {
    m_impl->fail(name);
  }
}

void TarWriter::write(std::span<const std::byte> data) {
  while (!data.empty()) {
    la_ssize_t n = archive_write_data(m_impl->a.get(), data.data(), data.size());
    if (n <= 0) {
      m_impl->fail("writing data");
    }
    data = data.subspan(static_cast<size_t>(n));
  }
}

void TarWriter::add(const std::string& name, std::span<const std::byte> data, const TarAttrs& attrs) {
  begin(name, data.size(), attrs, StreamCheck::sink);
  write(data);
}

void TarWriter::close() {
  if (!m_impl->closed) {
    m_impl->closed = true;
    if (archive_write_close(m_impl->a.get()) != ARCHIVE_OK) {
      m_impl->fail("finishing the archive");
    }
  }
}

struct TarReader::Impl {
  ArchivePtr a{archive_read_new()};
  std::string what;

  [[noreturn]] void fail(const std::string& action) {
    throw Error(what + " is damaged: " + action + ": " + why(a.get()), ExitCode::archive_invalid);
  }
};

TarReader::TarReader(int fd, std::string what) : m_impl(std::make_unique<Impl>()) {
  m_impl->what = std::move(what);
  archive* a = m_impl->a.get();
  if (archive_read_support_format_tar(a) != ARCHIVE_OK ||
      archive_read_open_fd(a, fd, 1 << 20) != ARCHIVE_OK) {
    throw Error(m_impl->what + " is empty or not a tar archive: " + why(a), ExitCode::archive_invalid);
  }
}

TarReader::~TarReader() = default;

bool TarReader::next(Entry& entry) {
  archive_entry* e = nullptr;
  int r = archive_read_next_header(m_impl->a.get(), &e);
  // Directory entries are not members (TarWriter::write_directories): skipped.
  while (r == ARCHIVE_OK && archive_entry_filetype(e) == AE_IFDIR && archive_entry_size(e) == 0) {
    r = archive_read_next_header(m_impl->a.get(), &e);
  }
  if (r == ARCHIVE_EOF) {
    return false;
  }
  if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
    m_impl->fail("reading a member header");
  }
  entry.name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
  entry.size = static_cast<uint64_t>(archive_entry_size(e));
  entry.attrs.clear();
  archive_entry_xattr_reset(e);
  const char* name = nullptr;
  const void* value = nullptr;
  size_t size = 0;
  while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
    entry.attrs[name] = std::string(static_cast<const char*>(value), size);
  }
  return true;
}

size_t TarReader::read(std::span<std::byte> buf) {
  la_ssize_t n = archive_read_data(m_impl->a.get(), buf.data(), buf.size());
  if (n < 0) {
    m_impl->fail("reading member data");
  }
  return static_cast<size_t>(n);
}

} // namespace ks

namespace ks {

namespace {

// Entry paths inside a share tar are relative ("./a/b"); DIR's own entry is ".".
std::string relative_to(const std::string& dir, const char* path) {
  std::string p = path;
  if (p == dir) {
    return ".";
  }
  return "./" + p.substr(dir.size() + (dir.back() == '/' ? 0 : 1));
}

void write_data(archive* out, const void* buf, size_t size, const std::string& dir) {
  if (size > 0 && archive_write_data(out, buf, size) < 0) {
    throw Error("failed to write the capture of " + dir + ": " + why(out));
  }
}

// Copies a regular file's data. For a sparse file the entry carries the sparse map and only
// the data blocks are written (the holes stay holes); otherwise holes are written as zeros.
void write_entry_data(archive* disk, archive* out, const std::string& dir, archive_entry* e) {
  const bool sparse = archive_entry_sparse_count(e) > 0;
  static const std::vector<char> zeros(1 << 16);
  const void* buf = nullptr;
  size_t size = 0;
  la_int64_t offset = 0;
  la_int64_t progress = 0;
  for (;;) {
    int r = archive_read_data_block(disk, &buf, &size, &offset);
    if (r == ARCHIVE_EOF) {
      break;
    }
    if (r != ARCHIVE_OK) {
      throw Error("failed to read " + dir + "/" + archive_entry_pathname(e) + ": " + why(disk));
    }
    for (; !sparse && progress < offset; progress += static_cast<la_int64_t>(zeros.size())) {
      write_data(out, zeros.data(), std::min<size_t>(zeros.size(), static_cast<size_t>(offset - progress)),
                 dir);
    }
    write_data(out, buf, size, dir);
    progress = offset + static_cast<la_int64_t>(size);
  }
  for (la_int64_t end = archive_entry_size(e); !sparse && progress < end;
       progress += static_cast<la_int64_t>(zeros.size())) {
    write_data(out, zeros.data(), std::min<size_t>(zeros.size(), static_cast<size_t>(end - progress)), dir);
  }
}

// A zstd-compressed pax tar of entries read from under one directory, hard links resolved
// across everything added.
class TreeTar {
public:
  TreeTar(std::string dir, int out_fd, int level) : m_dir(std::move(dir)) {
    std::string lvl = std::to_string(level);
    if (archive_write_set_format_pax(m_out.get()) != ARCHIVE_OK ||
        archive_write_add_filter_zstd(m_out.get()) != ARCHIVE_OK ||
        archive_write_set_filter_option(m_out.get(), "zstd", "compression-level", lvl.c_str()) !=
          ARCHIVE_OK ||
        archive_write_open_fd(m_out.get(), out_fd) != ARCHIVE_OK) {
      throw Error("failed to set up the capture of " + m_dir + ": " + why(m_out.get()));
    }
    archive_entry_linkresolver_set_strategy(m_links.get(), archive_format(m_out.get()));
  }

  // Adds the entry at DIR/REL ("." for DIR itself) and, with DESCEND, everything below it.
  void add(const std::string& rel, bool descend, const TreeEntrySeen& seen) {
    std::string path = rel == "." ? m_dir : m_dir + "/" + rel.substr(rel.rfind("./", 0) == 0 ? 2 : 0);
    ArchivePtr disk(archive_read_disk_new());
    archive_read_disk_set_symlink_physical(disk.get()); // never follow a link out of the tree
    archive_read_disk_set_standard_lookup(disk.get());
    archive_read_disk_set_behavior(disk.get(), ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS | ARCHIVE_READDISK_NO_ACL);
    if (archive_read_disk_open(disk.get(), path.c_str()) != ARCHIVE_OK) {
      throw Error("failed to open " + path + " for capture: " + why(disk.get()));
    }
    for (;;) {
      EntryPtr e(archive_entry_new());
      int r = archive_read_next_header2(disk.get(), e.get());
      if (r == ARCHIVE_EOF) {
        break;
      }
      if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
        throw Error("failed to capture " + path + ": " + why(disk.get()));
      }
      if (descend) {
        archive_read_disk_descend(disk.get());
      }
      std::string name = relative_to(m_dir, archive_entry_pathname(e.get()));
      archive_entry_copy_pathname(e.get(), name.c_str());
      if (seen) {
        seen(name, *archive_entry_stat(e.get())); // as read before the data: a later change shows
      }
      write(disk.get(), e.get());
      if (!descend) {
        break;
      }
    }
  }

  uint64_t finish() {
    if (archive_write_close(m_out.get()) != ARCHIVE_OK) {
      throw Error("failed to finish the capture of " + m_dir + ": " + why(m_out.get()));
    }
    return m_count;
  }

private:
  void write(archive* disk, archive_entry* e) {
    archive_entry* spare = nullptr;
    archive_entry* entry = e;
    archive_entry_linkify(m_links.get(), &entry, &spare); // hard links become link entries
    if (entry == nullptr) {
      return;
    }
    if (archive_write_header(m_out.get(), entry) != ARCHIVE_OK) {
      throw Error("failed to write the capture of " + m_dir + ": " + why(m_out.get()));
    }
    if (archive_entry_size(entry) > 0 && archive_entry_filetype(entry) == AE_IFREG) {
      write_entry_data(disk, m_out.get(), m_dir, entry);
    }
    ++m_count;
  }

  std::string m_dir;
  ArchivePtr m_out{archive_write_new()};
  std::unique_ptr<archive_entry_linkresolver, decltype(&archive_entry_linkresolver_free)> m_links{
    archive_entry_linkresolver_new(), &archive_entry_linkresolver_free};
  uint64_t m_count = 0;
};

} // namespace

uint64_t write_tree_tar_zst(const std::string& dir, int out_fd, int level, const TreeEntrySeen& seen) {
  TreeTar tar(dir, out_fd, level);
  tar.add(".", true, seen);
  return tar.finish();
}

uint64_t write_entries_tar_zst(const std::string& dir, const std::vector<std::string>& entries, int out_fd,
                               int level) {
  TreeTar tar(dir, out_fd, level);
  for (const auto& rel : entries) {
    tar.add(rel, false, {});
  }
  return tar.finish();
}

namespace {

// A path that stays inside the extraction directory: relative, with no ".." component.
bool safe_relative(const std::string& path) {
  if (path.empty() || path[0] == '/') {
    return false;
  }
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (path.substr(start, end == std::string::npos ? std::string::npos : end - start) == "..") {
      return false;
    }
    if (end == std::string::npos) {
      break;
    }
    start = end + 1;
  }
  return true;
}

struct SourceState {

  const ByteSource* source;
  std::vector<std::byte> buf = std::vector<std::byte>(1 << 20);
};

la_ssize_t source_read(archive*, void* ctx, const void** out) {
  auto* s = static_cast<SourceState*>(ctx);
  *out = s->buf.data();
  return static_cast<la_ssize_t>((*s->source)(s->buf));
}

// A directory entry's times, set again once the whole member is in: libarchive defers that
// only for directories it makes itself, and an existing one (a share pre-copy's base made it)
// would keep the time of the last entry written into it.
struct DirTimes {
  std::string rel;
  timespec times[2]; // atime, mtime, as futimens takes them
};

std::optional<DirTimes> dir_times(archive_entry* e, const std::string& rel) {
  if (archive_entry_filetype(e) != AE_IFDIR || !archive_entry_mtime_is_set(e)) {
    return std::nullopt;
  }
  DirTimes t{rel, {{0, UTIME_OMIT}, {archive_entry_mtime(e), archive_entry_mtime_nsec(e)}}};
  if (archive_entry_atime_is_set(e)) {
    t.times[0] = {archive_entry_atime(e), archive_entry_atime_nsec(e)};
  }
  return t;
}

// Sets the directories' times, in entry order (a name given twice keeps its later times;
// setting one directory's times changes no other's). A name that is no longer a directory
// inside DIR (a later entry replaced it) is skipped, never followed.
void set_dir_times(const std::string& dir, const std::vector<DirTimes>& dirs) {
  if (dirs.empty()) {
    return;
  }
  Fd root = open_root(dir);
  for (const auto& d : dirs) {
    Fd fd = open_beneath(root.get(), d.rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!fd) {
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP || errno == EXDEV) {
        continue;
      }
      throw_errno("failed to open " + dir + "/" + d.rel + " to set its times");
    }
    if (::futimens(fd.get(), d.times) != 0) {
      throw_errno("failed to set the times of " + dir + "/" + d.rel);
    }
  }
}

} // namespace

uint64_t extract_tar_zst(const ByteSource& source, const std::string& dir, const std::string& what) {
  ArchivePtr in(archive_read_new());
  ArchivePtr disk(archive_write_disk_new());
  SourceState state{&source};
  archive_read_support_format_tar(in.get());
  archive_read_support_filter_zstd(in.get());
  if (archive_read_open(in.get(), &state, nullptr, source_read, nullptr) != ARCHIVE_OK) {
    throw Error(what + " is damaged: " + why(in.get()), ExitCode::archive_invalid);
  }
  // Entry names are checked below (relative, no ".."); the target is made absolute here, so
  // libarchive's own absolute-path refusal does not apply. SECURE_SYMLINKS still refuses to
  // write through a symlink planted by an earlier entry.
  archive_write_disk_set_options(disk.get(), ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                               ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_PERM |
                                               ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_TIME |
                                               ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_SPARSE);
  uint64_t count = 0;
  std::vector<DirTimes> dirs;
  for (;;) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(in.get(), &e);
    if (r == ARCHIVE_EOF) {
      break;
    }
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      throw Error(what + " is damaged: " + why(in.get()), ExitCode::archive_invalid);
    }
    std::string rel = archive_entry_pathname(e);
    if (!safe_relative(rel) || (archive_entry_hardlink(e) && !safe_relative(archive_entry_hardlink(e)))) {
      throw Error(what + " holds an unsafe path: " + rel, ExitCode::archive_invalid);
    }
    // A device node in a share would hand the guest (through virtiofsd) a device of the host.
    if (archive_entry_filetype(e) == AE_IFCHR || archive_entry_filetype(e) == AE_IFBLK) {
      throw Error(what + " holds a device node, which a share never restores: " + rel,
                  ExitCode::archive_invalid);
    }
    if (auto t = dir_times(e, rel)) {
      dirs.push_back(std::move(*t));
    }
    archive_entry_copy_pathname(e, (dir + "/" + rel).c_str());
    if (const char* link = archive_entry_hardlink(e)) {
      archive_entry_copy_hardlink(e, (dir + "/" + link).c_str());
    }
    if (archive_write_header(disk.get(), e) != ARCHIVE_OK) {
      // A system error (ENOSPC, EACCES) is the host's; anything else is libarchive refusing
      // the entry itself (a write through a symlink an earlier entry planted): a hostile archive.
      bool refused = archive_errno(disk.get()) <= 0;
      throw Error("failed to restore " + rel + " into " + dir + ": " + why(disk.get()),
                  refused ? ExitCode::archive_invalid : ExitCode::failed);
    }
    const void* buf = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    while ((r = archive_read_data_block(in.get(), &buf, &size, &offset)) == ARCHIVE_OK) {
      if (archive_write_data_block(disk.get(), buf, size, offset) != ARCHIVE_OK) {
        throw Error("failed to restore " + rel + " into " + dir + ": " + why(disk.get()));
      }
    }
    if (r != ARCHIVE_EOF) {
      throw Error(what + " is damaged: " + why(in.get()), ExitCode::archive_invalid);
    }
    if (archive_write_finish_entry(disk.get()) != ARCHIVE_OK) {
      throw Error("failed to restore " + rel + " into " + dir + ": " + why(disk.get()));
    }
    ++count;
  }
  if (archive_write_close(disk.get()) != ARCHIVE_OK) {
    throw Error("failed to finish restoring " + dir + ": " + why(disk.get()));
  }
  set_dir_times(dir, dirs);
  return count;
}

} // namespace ks
