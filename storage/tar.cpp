#include "storage/tar.hpp"

#include "util/error.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <ctime>

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
  return s ? s : "unknown libarchive error";
}

} // namespace

struct TarWriter::Impl {
  ArchivePtr a{archive_write_new()};
  std::string what;
  bool closed = false;

  [[noreturn]] void fail(const std::string& action) {
    throw Error("failed to write " + what + ": " + action + ": " + why(a.get()));
  }
};

TarWriter::TarWriter(int fd, std::string what) : m_impl(std::make_unique<Impl>()) {
  m_impl->what = std::move(what);
  archive* a = m_impl->a.get();
  if (archive_write_set_format_pax(a) != ARCHIVE_OK ||
      archive_write_set_format_option(a, "pax", "xattrheader", "SCHILY") != ARCHIVE_OK ||
      archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
      archive_write_open_fd(a, fd) != ARCHIVE_OK) {
    m_impl->fail("setting up the tar writer");
  }
}

TarWriter::~TarWriter() = default;

void TarWriter::begin(const std::string& name, uint64_t size, const TarAttrs& attrs) {
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
  begin(name, data.size(), attrs);
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
