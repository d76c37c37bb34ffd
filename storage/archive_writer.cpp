#include "storage/archive_writer.hpp"

#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/sha256.hpp"

#include <fcntl.h>
#include <vector>

namespace ks {

namespace {

std::span<const std::byte> as_bytes(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

} // namespace

ArchiveWriter::ArchiveWriter(int fd, std::string what, const Json& manifest)
  : m_tar(fd, std::move(what)), m_fd(fd),
    m_format_version(manifest.value("format_version", k_format_version)) {
  std::string text = manifest.dump(2) + "\n";
  m_manifest_sha256 = sha256_hex(text);
  add_member(k_manifest_member, as_bytes(text), m_manifest_sha256);
}

void ArchiveWriter::add_member(const std::string& name, std::span<const std::byte> data,
                               const std::string& sha256) {
  m_tar.add(name, data, {{k_sha256_attr, sha256}});
  m_members.push_back({{"name", name}, {"size", data.size()}, {"sha256", sha256}});
  m_bytes += data.size();
}

void ArchiveWriter::add_member_from_fd(const std::string& name, int fd, uint64_t size,
                                       const std::string& sha256) {
  m_tar.begin(name, size, {{k_sha256_attr, sha256}});
  std::vector<std::byte> buf(1 << 20);
  uint64_t left = size;
  while (left > 0) {
    size_t n = read_full(fd, std::span(buf).first(std::min<uint64_t>(left, buf.size())), name);
    if (n == 0) {
      throw Error("the capture for " + name + " shrank while it was being archived");
    }
    m_tar.write(std::span(buf).first(n));
    left -= n;
  }
  m_members.push_back({{"name", name}, {"size", size}, {"sha256", sha256}});
  m_bytes += size;
}

void ArchiveWriter::start_writeback() {
  // Fails harmlessly (ESPIPE, EINVAL) on pipes and filesystems without it.
  ::sync_file_range(m_fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

void ArchiveWriter::finish(const Json& extra_index_fields) {
  Json index = {{"format", k_format_name},
                {"format_version", m_format_version},

                {"manifest_sha256", m_manifest_sha256},
                {"members", m_members}};
  index.update(extra_index_fields);
  std::string text = index.dump(2) + "\n";
  m_tar.add(k_index_member, as_bytes(text), {{k_sha256_attr, sha256_hex(text)}});
  m_tar.close();
}

} // namespace ks
