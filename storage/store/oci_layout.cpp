#include "storage/store/oci_layout.hpp"

#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/file_lock.hpp"
#include "util/json_fields.hpp"

#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ks {

namespace {

constexpr const char* k_layout_file = "{\"imageLayoutVersion\":\"1.0.0\"}";
constexpr uint64_t k_max_index_size = 64u << 20;

[[noreturn]] void damaged(const std::string& what, const std::string& why) {
  throw Error(what + " is damaged: " + why, ExitCode::archive_invalid);
}

bool is_empty_dir(const std::string& dir) {
  struct stat st {};
  return ::stat(dir.c_str(), &st) != 0 ? errno == ENOENT : S_ISDIR(st.st_mode) && list_dir(dir).empty();
}

void write_new(const std::string& path, const std::string& text) {
  AtomicFile f(path, AtomicFile::Overwrite::yes);
  write_all(f.fd(), text, path);
  f.commit();
}

} // namespace

Json Descriptor::to_json() const {
  Json j = {{"mediaType", media_type}, {"digest", digest}, {"size", size}};
  if (!annotations.empty()) {
    j["annotations"] = annotations;
  }
  return j;
}

std::string Descriptor::annotation(const std::string& key) const {
  auto it = annotations.find(key);
  return it != annotations.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string sha256_digest(const std::string& hex) {
  bool ok = hex.size() == 64;
  for (char c : hex) {
    ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  }
  if (!ok) {
    throw Error("\"" + hex + "\" is not a SHA-256 digest", ExitCode::archive_invalid);
  }
  return "sha256:" + hex;
}

Descriptor Descriptor::parse(const Json& j, const std::string& what) {
  if (!j.is_object() || !j.contains("digest") || !j["digest"].is_string() || !j.contains("size") ||
      !j["size"].is_number_unsigned() || !j.contains("mediaType") || !j["mediaType"].is_string()) {
    damaged(what, "a descriptor lacks its mediaType, digest or size");
  }
  Descriptor d{j["mediaType"], j["digest"], j["size"].get<uint64_t>(),
               j.value("annotations", Json::object())};
  if (!d.digest.starts_with("sha256:")) {
    damaged(what, "digest " + d.digest + " is not a sha256 digest");
  }
  try {
    sha256_digest(d.hex());
  } catch (const Error& e) {
    damaged(what, e.what());
  }
  if (!d.annotations.is_object()) {
    damaged(what, "the annotations of " + d.digest + " are not an object");
  }
  return d;
}

OciLayout::OciLayout(std::string dir, Create create) : m_dir(std::move(dir)) {
  while (m_dir.size() > 1 && m_dir.ends_with('/')) {
    m_dir.pop_back();
  }
  struct stat st {};
  bool has_layout = ::stat((m_dir + "/oci-layout").c_str(), &st) == 0;
  if (!has_layout && create == Create::yes) {
    if (!is_empty_dir(m_dir)) {
      throw Error(m_dir + " exists and is not an OCI image layout", ExitCode::failed,
                  "name a new or empty directory, or an existing oci: repository");
    }
    make_dirs(m_dir + "/blobs/sha256");
    write_new(
      m_dir + "/index.json",
      Json{{"schemaVersion", 2}, {"mediaType", k_oci_index_type}, {"manifests", Json::array()}}.dump() +
        "\n");
    write_new(m_dir + "/oci-layout", std::string(k_layout_file) + "\n");
    has_layout = true;
  }
  if (!has_layout) {
    throw Error(m_dir + " is not an OCI image layout (no oci-layout file)", ExitCode::archive_invalid);
  }
  Json layout = Json::parse(read_file(m_dir + "/oci-layout"), nullptr, false);
  if (!layout.is_object() || json_string(layout, "imageLayoutVersion") != "1.0.0") {
    damaged(m_dir, "oci-layout does not say imageLayoutVersion 1.0.0");
  }
}

std::string OciLayout::lock_path() const {
  make_dirs(m_dir + "/.kata-snapshot");
  return m_dir + "/.kata-snapshot/lock";
}

std::unique_ptr<FileLock> OciLayout::lock_for_reading(const std::string& purpose) const {
  std::string meta = m_dir + "/.kata-snapshot";
  if (::access(m_dir.c_str(), W_OK) != 0 ||
      (::access(meta.c_str(), F_OK) == 0 && ::access(meta.c_str(), W_OK) != 0)) {
    return nullptr;
  }
  return std::make_unique<FileLock>(lock_path(),
                                    FileLock::Options{.mode = LockMode::shared,
                                                      .wait = std::chrono::seconds(60),
                                                      .purpose = purpose,
                                                      .what = "the repository " + m_dir,
                                                      .hint = "a prune or gc is running; wait for it"});
}

std::string OciLayout::blob_path(const std::string& digest) const {
  if (!digest.starts_with("sha256:")) {
    throw Error("\"" + digest + "\" is not a sha256 digest", ExitCode::archive_invalid);
  }
  sha256_digest(digest.substr(7));
  return m_dir + "/blobs/sha256/" + digest.substr(7);
}

std::optional<uint64_t> OciLayout::blob_size(const std::string& digest) const {
  struct stat st {};
  if (::lstat(blob_path(digest).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return std::nullopt;
  }
  return static_cast<uint64_t>(st.st_size);
}

bool OciLayout::put_blob(std::span<const std::byte> data, const std::string& digest) {
  if (blob_size(digest) == data.size()) {
    return false;
  }
  AtomicFile f(blob_path(digest), AtomicFile::Overwrite::yes);
  write_all(f.fd(), data, f.temp_path());
  f.commit();
  return true;
}

Bytes OciLayout::read_blob(const Descriptor& d, uint64_t max, const std::string& what) const {
  if (d.size > max) {
    damaged(what, "blob " + d.digest + " is " + std::to_string(d.size) + " bytes, more than the " +
                    std::to_string(max) + " allowed");
  }
  Fd f(::open(blob_path(d.digest).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!f) {
    damaged(what, "blob " + d.digest + " is missing");
  }
  Bytes data(d.size + 1);
  size_t n = read_full(f.get(), data, blob_path(d.digest));
  if (n != d.size) {
    damaged(what, "blob " + d.digest + " is not " + std::to_string(d.size) + " bytes long");
  }
  data.resize(n);
  if (sha256_digest(sha256_hex(data)) != d.digest) {
    damaged(what, "blob " + d.digest + " does not match its digest (corrupted)");
  }
  return data;
}

Json OciLayout::read_index() const {
  std::string path = m_dir + "/index.json";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) > k_max_index_size) {
    damaged(m_dir, "index.json is missing or implausibly large");
  }
  Json index = Json::parse(read_file(path), nullptr, false);
  if (!index.is_object() || json_unsigned(index, "schemaVersion", 0) != 2 || !index.contains("manifests") ||
      !index["manifests"].is_array()) {
    damaged(m_dir, "index.json is not an OCI image index");
  }
  return index;
}

void OciLayout::update_index(const std::function<void(Json& index)>& change) {
  make_dirs(m_dir + "/.kata-snapshot");
  FileLock lock(m_dir + "/.kata-snapshot/index.lock", {.mode = LockMode::exclusive,
                                                       .wait = std::chrono::seconds(60),
                                                       .purpose = "index.json update",
                                                       .what = "index.json of " + m_dir,
                                                       .hint = {}});
  Json index = read_index();
  change(index);
  write_new(m_dir + "/index.json", index.dump(2) + "\n");
}

std::vector<std::string> OciLayout::blob_files() const {
  return list_dir(m_dir + "/blobs/sha256");
}

BlobWriter::BlobWriter(const OciLayout& layout, std::string digest, uint64_t size, bool exists,
                       BlobCheck check)
  : m_digest(std::move(digest)), m_size(size), m_check(check) {
  if (exists) {
    return;
  }
  std::string path = layout.blob_path(m_digest);
  m_temp = dir_name(path) + "/." + m_digest.substr(7) + ".tmp-XXXXXX";
  int fd = ::mkostemp(m_temp.data(), O_CLOEXEC);
  if (fd < 0) {
    throw_errno("cannot create a blob in " + dir_name(path));
  }
  m_fd.reset(fd);
}

BlobWriter::BlobWriter(BlobWriter&& o) noexcept
  : m_digest(std::move(o.m_digest)), m_size(o.m_size), m_got(o.m_got), m_check(o.m_check),
    m_hash(std::move(o.m_hash)), m_temp(std::exchange(o.m_temp, {})), m_fd(std::move(o.m_fd)) {}

BlobWriter::~BlobWriter() {
  if (!m_temp.empty()) {
    ::unlink(m_temp.c_str()); // not finished: never published
  }
}

void BlobWriter::write(std::span<const std::byte> data) {
  if (m_check == BlobCheck::digest) {
    m_hash.update(data);
  }
  m_got += data.size();
  if (m_fd) {
    write_all(m_fd.get(), data, m_temp);
  }
}

std::string BlobWriter::finish() {
  if (m_got != m_size || (m_check == BlobCheck::digest && sha256_digest(m_hash.hex_digest()) != m_digest)) {
    throw Error("the data written for blob " + m_digest + " does not match its digest or size",
                ExitCode::archive_invalid);
  }
  m_fd.reset();
  return std::exchange(m_temp, {});
}

BlobBatch::~BlobBatch() {
  for (const auto& [digest, temp] : m_pending) {
    ::unlink(temp.c_str());
  }
}

bool BlobBatch::has(const std::string& digest, uint64_t size) const {
  return m_pending.contains(digest) || m_layout.blob_size(digest) == size;
}

BlobWriter BlobBatch::begin(const std::string& digest, uint64_t size, BlobCheck check) {
  return BlobWriter(m_layout, digest, size, has(digest, size), check);
}

void BlobBatch::add(const std::string& digest, std::string temp) {
  if (!temp.empty() && !m_pending.emplace(digest, temp).second) {
    ::unlink(temp.c_str()); // the same blob twice in one snapshot
  }
}

void BlobBatch::publish() {
  if (m_pending.empty()) {
    return;
  }
  Fd dir = open_file(m_layout.dir() + "/blobs/sha256", O_RDONLY | O_DIRECTORY);
  if (::syncfs(dir.get()) != 0) {
    throw_errno("failed to flush the blobs of " + m_layout.dir());
  }
  for (auto it = m_pending.begin(); it != m_pending.end(); it = m_pending.erase(it)) {
    if (::rename(it->second.c_str(), m_layout.blob_path(it->first).c_str()) != 0) {
      throw_errno("failed to rename " + it->second);
    }
  }
  if (::fsync(dir.get()) != 0) {
    throw_errno("failed to flush " + m_layout.dir() + "/blobs/sha256");
  }
}

} // namespace ks
