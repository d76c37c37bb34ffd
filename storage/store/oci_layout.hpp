// An OCI image layout directory (image-spec, image-layout.md): oci-layout, index.json and
// blobs/sha256/<hex>. Blobs are written to a temp name, fsynced and renamed; index.json is
// replaced atomically under its own short lock. Everything read is checked: digests, sizes,
// and a cap on what is read into memory.
#pragma once

#include "storage/manifest.hpp"
#include "storage/zstd_codec.hpp"
#include "util/atomic_file.hpp"
#include "util/fd.hpp"
#include "util/file_lock.hpp"
#include "util/sha256.hpp"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ks {

inline constexpr const char* k_oci_manifest_type = "application/vnd.oci.image.manifest.v1+json";
inline constexpr const char* k_oci_index_type = "application/vnd.oci.image.index.v1+json";
inline constexpr const char* k_oci_ref_name = "org.opencontainers.image.ref.name";
inline constexpr uint64_t k_max_manifest_size = 4u << 20; // what registries accept (distribution)

// A content descriptor: what a manifest or index says about a blob.
struct Descriptor {
  std::string media_type;
  std::string digest; // sha256:<64 lowercase hex>
  uint64_t size = 0;
  Json annotations = Json::object();

  Json to_json() const;
  // Throws Error(exit 3) naming WHAT when J is not a well-formed sha256 descriptor.
  static Descriptor parse(const Json& j, const std::string& what);
  std::string hex() const { return digest.substr(7); }
  std::string annotation(const std::string& key) const;
};

// "sha256:" + HEX, after checking HEX is 64 lowercase hex digits (exit 3 otherwise).
std::string sha256_digest(const std::string& hex);

class OciLayout {
public:
  enum class Create { no, yes };
  // Opens DIR (exit 3 when it is not an OCI image layout); with CREATE, makes it first when
  // it does not exist or is empty.
  OciLayout(std::string dir, Create create);

  const std::string& dir() const { return m_dir; }
  std::string blob_path(const std::string& digest) const;
  // The size of blob DIGEST, or nullopt when it is not there (or not a regular file).
  std::optional<uint64_t> blob_size(const std::string& digest) const;
  // Stores DATA as blob DIGEST, unless a blob of that digest and size is there already.
  // Returns whether it was written.
  bool put_blob(std::span<const std::byte> data, const std::string& digest);
  // Reads blob D whole (at most MAX bytes) and checks its size and digest (exit 3).
  Bytes read_blob(const Descriptor& d, uint64_t max, const std::string& what) const;

  // index.json, checked; and its replacement under the index lock: CHANGE edits it.
  Json read_index() const;
  void update_index(const std::function<void(Json& index)>& change);

  // The repository lock file (its directory made when missing), and where a save stages
  // what is not a blob yet.
  std::string lock_path() const;
  std::string temp_dir() const { return m_dir + "/.kata-snapshot/tmp"; }
  // The lock taken shared for reading a snapshot (a gc then waits), or nullptr when this
  // user cannot write the repository: reading one on a read-only mount needs no lock.
  std::unique_ptr<FileLock> lock_for_reading(const std::string& purpose) const;

  // Every file under blobs/sha256 ("<hex>", or temp files of unfinished writes).
  std::vector<std::string> blob_files() const;

private:
  std::string m_dir;
};

// A blob written in pieces under a temp name in blobs/sha256; finish() checks its size and
// SHA-256 against DIGEST and closes it. It takes its name in BlobBatch::publish(), with
// every other blob of the same snapshot, after one syncfs: a snapshot of 2,000 chunks would
// otherwise wait for 2,000 fsyncs. A blob that is there already is only hashed.
// How a blob's bytes are checked against its digest: hashed as they are written, or not at
// all where the writer hashed exactly these bytes itself (a chunk just compressed).
enum class BlobCheck { digest, trusted };

class BlobWriter {
public:
  BlobWriter(const OciLayout& layout, std::string digest, uint64_t size, bool exists, BlobCheck check);
  ~BlobWriter();
  BlobWriter(BlobWriter&&) noexcept;
  BlobWriter& operator=(BlobWriter&&) = delete;
  void write(std::span<const std::byte> data);
  // Checks size and digest; returns the temp file's path, or "" when nothing was written.
  std::string finish();

private:
  std::string m_digest;
  uint64_t m_size;
  uint64_t m_got = 0;
  BlobCheck m_check;
  Sha256 m_hash;
  std::string m_temp;
  Fd m_fd; // none when the blob exists
};

// The new blobs of one snapshot, published together: syncfs(2) of the repository's
// filesystem, every temp file renamed to its digest, blobs/sha256 fsynced. Until then the
// temp files are what an interrupted save leaves behind, which gc removes.
class BlobBatch {
public:
  explicit BlobBatch(const OciLayout& layout) : m_layout(layout) {}
  ~BlobBatch();
  BlobBatch(const BlobBatch&) = delete;
  BlobBatch& operator=(const BlobBatch&) = delete;

  // Whether DIGEST is stored or on its way (written by this batch).
  bool has(const std::string& digest, uint64_t size) const;
  BlobWriter begin(const std::string& digest, uint64_t size, BlobCheck check);
  void add(const std::string& digest, std::string temp); // BlobWriter::finish()'s temp file
  void publish();

private:
  const OciLayout& m_layout;
  std::map<std::string, std::string> m_pending; // digest -> temp file
};

} // namespace ks
