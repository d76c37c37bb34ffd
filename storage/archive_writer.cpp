#include "storage/archive_writer.hpp"

#include "storage/tar.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/sha256.hpp"

#include <optional>
#include <unistd.h>
#include <vector>

namespace ks {

namespace {

std::span<const std::byte> as_bytes(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

} // namespace

ArchiveWriter::ArchiveWriter(int fd, std::string what, const Json& manifest)
  : ArchiveWriter(std::make_unique<TarWriter>(fd, std::move(what)), manifest) {}

ArchiveWriter::ArchiveWriter(std::unique_ptr<EntrySink> sink, const Json& manifest)
  : ArchiveWriter(std::move(sink), ManifestText{manifest.dump(2) + "\n"}) {}

ArchiveWriter::ArchiveWriter(std::unique_ptr<EntrySink> sink, const ManifestText& manifest)
  : m_sink(std::move(sink)), m_sealer(manifest.sealer),
    m_format_version(Json::parse(manifest.text).value("format_version", k_format_version)) {
  m_manifest_sha256 = sha256_hex(manifest.text);
  TarAttrs a = manifest.carried;
  a[k_sha256_attr] = m_manifest_sha256;
  if (m_sealer) {
    a[k_mac_attr] = m_sealer->keys().mac_of(k_manifest_member, manifest.text);
  }
  m_sink->add(k_manifest_member, as_bytes(manifest.text), a);
  record(k_manifest_member, manifest.text.size(), m_manifest_sha256);
}

TarAttrs ArchiveWriter::attrs(const std::string& name, const std::string& sha256, const std::string& raw_hash,
                              const MemberKey* key) const {
  TarAttrs a{{k_sha256_attr, sha256}};
  if (!raw_hash.empty() && m_sink->wants_raw_hashes()) {
    a[k_raw_hash_attr] = raw_hash;
  }
  if (m_sealer) {
    KS_ASSERT(key != nullptr);
    a[k_member_key_attr] = m_sealer->keys().wrap_member_key(*key, m_members.size(), name, sha256);
  }
  return a;
}

void ArchiveWriter::record(const std::string& name, uint64_t size, const std::string& sha256) {
  m_members.push_back({{"name", name}, {"size", size}, {"sha256", sha256}});
  m_bytes += size;
}

void ArchiveWriter::add_member(const std::string& name, std::span<const std::byte> data,
                               const std::string& sha256, const std::string& raw_hash, const MemberKey* key) {
  KS_ASSERT(m_open_left == 0);
  if (m_sealer && key == nullptr) { // a small member (a share's removed list): sealed here
    Bytes sealed = bytes_of(data);
    MemberKey k = m_sealer->seal(sealed, "");
    add_member(name, sealed, sha256_hex(sealed), raw_hash, &k);
    return;
  }
  m_sink->add(name, data, attrs(name, sha256, raw_hash, key));
  record(name, data.size(), sha256);
}

void ArchiveWriter::add_stored(const std::string& name, const StoredMember& stored,
                               const std::string& raw_hash, const MemberKey* key) {
  KS_ASSERT(m_open_left == 0);
  m_sink->add_stored(name, stored, attrs(name, stored.sha256, raw_hash, key));
  record(name, stored.size, stored.sha256);
  m_stored += stored.size;
}

void ArchiveWriter::begin_member(const std::string& name, uint64_t size, const std::string& sha256,
                                 StreamCheck check, const std::string& raw_hash, const TarAttrs& carried) {
  KS_ASSERT(m_open_left == 0 && !m_sealer);
  TarAttrs a = carried;
  a.merge(attrs(name, sha256, raw_hash, nullptr));
  m_sink->begin(name, size, a, check);
  record(name, size, sha256);
  m_open_left = size;
}

void ArchiveWriter::write_member(std::span<const std::byte> data) {
  KS_ASSERT(data.size() <= m_open_left);
  m_sink->write(data);
  m_open_left -= data.size();
}

void ArchiveWriter::add_member_from_fd(const std::string& name, int fd, uint64_t size,
                                       const std::string& sha256) {
  KS_ASSERT(m_open_left == 0);
  std::string sha = sha256;
  std::optional<MemberKey> key;
  if (m_sealer) {
    key = m_sealer->seal_file(fd, size, sha, name);
  }
  m_sink->begin(name, size, attrs(name, sha, "", key ? &*key : nullptr), StreamCheck::sink);
  record(name, size, sha);
  m_open_left = size;
  std::vector<std::byte> buf(1 << 20);
  if (::lseek(fd, 0, SEEK_SET) != 0) {
    throw Error("failed to rewind the capture for " + name);
  }
  while (m_open_left > 0) {
    size_t n = read_full(fd, std::span(buf).first(std::min<uint64_t>(m_open_left, buf.size())), name);
    if (n == 0) {
      throw Error("the capture for " + name + " shrank while it was being archived");
    }
    write_member(std::span(buf).first(n));
  }
}

void ArchiveWriter::finish(const Json& extra_index_fields, const IndexSigner& sign, const TarAttrs& carried) {
  KS_ASSERT(m_open_left == 0);
  Json index = {{"format", k_format_name},
                {"format_version", m_format_version},

                {"manifest_sha256", m_manifest_sha256},
                {"members", m_members}};
  index.update(extra_index_fields);
  std::string text = index.dump(2) + "\n";
  TarAttrs a = carried;
  a[k_sha256_attr] = sha256_hex(text);
  if (m_sealer) {
    a[k_mac_attr] = m_sealer->keys().mac_of(k_index_member, text);
  }
  if (sign) {
    if (std::string sig = sign(text); !sig.empty()) {
      a[k_signature_attr] = sig;
    }
  }
  m_sink->add(k_index_member, as_bytes(text), a);
  m_sink->close();
}

} // namespace ks
