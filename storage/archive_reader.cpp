#include "storage/archive_reader.hpp"

#include "storage/buffer_pool.hpp"
#include "storage/tar.hpp"

#include "util/error.hpp"
#include "util/json_fields.hpp"
#include "util/sha256.hpp"

namespace ks {

namespace {

constexpr uint64_t k_max_member = 256ull << 20; // vmstate chunks and JSON are far smaller
// The JSON members are parsed whole (several times their size in memory): tighter bounds.
// A manifest is a few KiB; an index lists each member in about 150 bytes (a 1 TiB VM in
// 8 MiB chunks: 20 MiB).
constexpr uint64_t k_max_manifest = 16ull << 20;
constexpr uint64_t k_max_index = 64ull << 20;

[[noreturn]] void damaged(const std::string& what, const std::string& why) {
  throw Error(what + " is damaged: " + why, ExitCode::archive_invalid);
}

std::string attr_of(const TarAttrs& attrs, const char* name) {
  auto it = attrs.find(name);
  return it == attrs.end() ? std::string() : it->second;
}

std::string attr(const ArchiveEntry& e, const char* name) {
  return attr_of(e.attrs, name);
}

} // namespace

ArchiveReader::ArchiveReader(int fd, const std::string& what)
  : ArchiveReader(std::make_unique<TarReader>(fd, what), what) {}

ArchiveReader::ArchiveReader(Fd fd, const std::string& what) : ArchiveReader(fd.get(), what) {
  m_fd = std::move(fd);
}

ArchiveReader::ArchiveReader(std::unique_ptr<EntrySource> source, std::string what)
  : m_tar(std::move(source)), m_what(std::move(what)) {
  ArchiveEntry e;
  if (!m_tar->next(e)) {
    throw Error(m_what + " is empty or not a kata-snapshot archive", ExitCode::archive_invalid);
  }
  if (e.name != k_manifest_member) {
    damaged(m_what, "the first member is " + e.name + ", not " + k_manifest_member);
  }
  Member m{e.name, attr(e, k_sha256_attr), "", read_data(e)};
  check_member(m);
  std::string text(reinterpret_cast<const char*>(m.data.data()), m.data.size());
  m_manifest = Json::parse(text, nullptr, false);
  m_manifest_text = text;
  if (m_manifest.is_discarded()) {
    damaged(m_what, "manifest.json is not valid JSON");
  }
  validate_manifest(m_manifest);
  m_manifest_sha256 = m.sha256;
  m_manifest_attrs = e.attrs;
}

TarAttrs ArchiveReader::carried(const TarAttrs& attrs) {
  TarAttrs out;
  for (const char* key : {k_mac_attr, k_member_key_attr}) {
    if (auto it = attrs.find(key); it != attrs.end()) {
      out.insert(*it);
    }
  }
  return out;
}

void ArchiveReader::unlock(const DecryptKey& key) {
  if (!encrypted()) {
    throw Error(
      m_what + " is not encrypted, and a decryption key was given", ExitCode::archive_invalid,
      "an encrypted snapshot may have been replaced; load it without --decrypt-key if it is trusted");
  }
  m_opener = std::make_unique<Opener>(m_manifest["encryption"], key, m_what);
  m_opener->check_mac(k_manifest_member, attr_of(m_manifest_attrs, k_mac_attr), m_manifest_text);
}

Bytes ArchiveReader::read_data(const ArchiveEntry& e) {
  uint64_t bound = e.name == k_manifest_member ? k_max_manifest
                   : e.name == k_index_member  ? k_max_index
                                               : k_max_member;
  if (e.size > bound) {
    damaged(m_what, "member " + e.name + " is implausibly large (" + std::to_string(e.size) + " bytes)");
  }
  Bytes data = m_buffers != nullptr ? m_buffers->get(e.size) : Bytes(e.size);
  size_t got = 0;

  while (got < data.size()) {
    size_t n = m_tar->read(std::span(data).subspan(got));
    if (n == 0) {
      damaged(m_what, "member " + e.name + " is truncated");
    }
    got += n;
  }
  return data;
}

void ArchiveReader::check_member(Member& m) const {
  if (m.checked) {
    return;
  }
  if (m.sha256.empty()) {
    damaged(m_what, "member " + m.name + " has no SHA-256 in its header");
  }
  std::optional<MemberKey> key;
  if (m_opener && m.name != k_manifest_member && m.name != k_index_member) {
    key = m_opener->member_key(m.sealed_key, m.position, m.name, m.sha256);
  }
  // A member sealed with a random key: its tag authenticates its bytes, a hash adds nothing.
  if ((!key || key->derived) && sha256_hex(m.data) != m.sha256) {
    damaged(m_what, "member " + m.name + " does not match its SHA-256 (corrupted)");
  }
  if (key) {
    m_opener->open(m.data, *key, m.name);
  }
  m.checked = true;
}

void ArchiveReader::unread(Member member) {
  KS_ASSERT(!m_pending);
  m_pending = std::move(member);
}

std::optional<std::string> ArchiveReader::next_if(const std::string& prefix) {
  if (m_pending) {
    return std::nullopt;
  }
  ArchiveEntry e = next_entry();
  if (e.name != k_index_member && e.name.rfind(prefix, 0) == 0) {
    m_open = e;
    return e.name;
  }
  if (!finish_if_index(e)) {
    m_pending = read_member(e);
  }
  return std::nullopt;
}

ArchiveEntry ArchiveReader::next_entry() {
  ArchiveEntry e;
  if (!m_tar->next(e)) {
    damaged(m_what, "index.json is missing (the archive is incomplete or truncated)");
  }
  return e;
}

bool ArchiveReader::finish_if_index(const ArchiveEntry& e) {
  if (e.name != k_index_member) {
    return false;
  }
  read_index(e);
  m_index_done = true;
  return true;
}

ArchiveReader::Member ArchiveReader::read_member(const ArchiveEntry& e) {
  std::string sha = attr(e, k_sha256_attr);
  Member m{
    e.name, sha, attr(e, k_raw_hash_attr), read_data(e), m_seen.size() + 1, attr(e, k_member_key_attr)};
  m_seen.push_back({{"name", m.name}, {"size", m.data.size()}, {"sha256", sha}});
  return m;
}

void ArchiveReader::stream_member(const std::function<void(const Source&)>& consume) {
  KS_ASSERT(m_open);
  ArchiveEntry e = std::move(*m_open);
  m_open.reset();
  Sha256 hash;
  uint64_t total = 0;
  Source source = [&](std::span<std::byte> buf) {
    size_t n = m_tar->read(buf);
    hash.update(buf.first(n));
    total += n;
    return n;
  };
  std::string sha = attr(e, k_sha256_attr);
  std::optional<Opener::Stream> opened;
  if (m_opener) {
    opened = m_opener->open_stream(
      source, m_opener->member_key(attr(e, k_member_key_attr), m_seen.size() + 1, e.name, sha), e.name);
  }
  const Source& plain = opened ? opened->source : source;
  consume(plain);
  std::byte rest[65536];
  while (plain(rest) > 0) {
    // Drain what the consumer did not read (tar padding), so the hash covers the member.
  }
  if (total != e.size) {
    damaged(m_what, "member " + e.name + " is truncated");
  }
  if (sha.empty() || hash.hex_digest() != sha) {
    damaged(m_what, "member " + e.name + " does not match its SHA-256 (corrupted)");
  }
  if (opened) {
    opened->finish();
  }
  m_seen.push_back({{"name", e.name}, {"size", e.size}, {"sha256", sha}});
}

std::optional<ArchiveReader::Member> ArchiveReader::next() {
  if (m_pending) {
    Member m = std::move(*m_pending);
    m_pending.reset();
    return m;
  }
  if (m_index_done) {
    return std::nullopt;
  }
  ArchiveEntry e = next_entry();
  if (finish_if_index(e)) {
    return std::nullopt;
  }
  return read_member(e);
}

void ArchiveReader::read_index(const ArchiveEntry& e) {
  Member m{e.name, attr(e, k_sha256_attr), "", read_data(e)};
  check_member(m);
  std::string text(reinterpret_cast<const char*>(m.data.data()), m.data.size());
  if (m_opener) {
    m_opener->check_mac(k_index_member, attr(e, k_mac_attr), text);
  }
  if (m_expected_index && text != *m_expected_index) {
    damaged(m_what,
            "index.json is not the one checked before the load began (the snapshot changed meanwhile)");
  }
  Json index = Json::parse(text, nullptr, false);
  if (index.is_discarded() || !index.is_object()) {
    damaged(m_what, "index.json is not valid JSON");
  }
  if (json_string(index, "manifest_sha256") != m_manifest_sha256) {
    damaged(m_what, "index.json does not match manifest.json");
  }
  if (index.value("members", Json::array()).size() != m_seen.size() + 1) {
    damaged(m_what, "index.json lists " + std::to_string(index.value("members", Json::array()).size()) +
                      " members but the archive holds " + std::to_string(m_seen.size() + 1));
  }
  // The first listed member is the manifest; the rest must match what we read, in order.
  for (size_t i = 0; i < m_seen.size(); ++i) {
    if (index["members"][i + 1] != m_seen[i]) {
      damaged(m_what, "member " + m_seen[i].value("name", "?") + " does not match index.json");
    }
  }
  ArchiveEntry after;
  if (m_tar->next(after)) {
    damaged(m_what, "unexpected member " + after.name + " after index.json");
  }
  m_index = std::move(index);
  m_index_text = std::move(text);
  m_index_signature = attr(e, k_signature_attr);
  m_index_attrs = e.attrs;
}

} // namespace ks
