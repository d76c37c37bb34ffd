// A snapshot as an OCI image manifest (docs/repository.md): artifactType
// application/vnd.kata-snapshot.v1, config = manifest.json, one layer per archive member in
// archive order (index.json last), the member's name in org.opencontainers.image.title. A
// layer's digest is the member's SHA-256, so a .ksnap file and a repository snapshot hold the
// same bytes.
#pragma once

#include "storage/entry_io.hpp"
#include "storage/manifest.hpp"
#include "storage/store/chunk_cache.hpp"
#include "storage/store/oci_layout.hpp"

#include "util/fd.hpp"

#include <functional>
#include <unordered_map>
#include <vector>

namespace ks {

inline constexpr const char* k_artifact_type = "application/vnd.kata-snapshot.v1";
inline constexpr const char* k_config_type = "application/vnd.kata-snapshot.manifest.v1+json";
inline constexpr const char* k_title_annotation = "org.opencontainers.image.title";
inline constexpr const char* k_created_annotation = "org.opencontainers.image.created";
inline constexpr const char* k_raw_annotation = "io.kata-snapshot.raw-blake3";
// What versions before the BLAKE3 key wrote instead: checked by check --read-data, never
// looked up (a save hashes with BLAKE3 only).
inline constexpr const char* k_raw_sha256_annotation = "io.kata-snapshot.raw-sha256";
inline constexpr const char* k_signature_annotation = "io.kata-snapshot.signature"; // on index.json
inline constexpr const char* k_key_annotation = "io.kata-snapshot.key"; // an encrypted member's sealed key
inline constexpr const char* k_mac_annotation =
  "io.kata-snapshot.mac"; // on manifest.json and index.json, encrypted
inline constexpr const char* k_label_annotation_prefix = "io.kata-snapshot.label.";

// The media type of archive member NAME.
std::string member_media_type(const std::string& name);

struct OciSnapshot {
  Descriptor manifest; // as index.json lists it
  std::string tag;     // its org.opencontainers.image.ref.name ("" when untagged)
  Descriptor config;
  std::vector<Descriptor> layers;
  Json annotations = Json::object();

  std::string created() const; // RFC 3339, "" when unknown
  uint64_t size() const;       // manifest + config + layers
};

// Every snapshot index.json lists, checked (exit 3 on a malformed manifest or a manifest that
// is not a kata-snapshot). Manifests of other artifacts are skipped.
std::vector<OciSnapshot> read_snapshots(const OciLayout& layout);
OciSnapshot read_snapshot(const OciLayout& layout, const Descriptor& manifest);
// The snapshot image manifest DATA (described by MANIFEST), checked; WHAT names it.
OciSnapshot parse_snapshot(const Descriptor& manifest, std::span<const std::byte> data,
                           const std::string& what);
// The snapshot tagged TAG, or with TAG empty the newest one; throws (exit 3) when none.
OciSnapshot find_snapshot(const OciLayout& layout, const std::string& tag);

// Chunks a save may reuse, by the hash of their uncompressed bytes (layer annotations of
// the snapshots in LAYOUT whose blobs are there with the right size). Each manifest's
// entries come from the repository's chunk cache (chunk_cache.hpp), or are parsed and cached.
using RawIndex = std::unordered_map<std::string, StoredMember>;
RawIndex build_raw_index(const OciLayout& layout);
// The same over SNAPSHOTS, with the blobs STORED says are there.
RawIndex build_raw_index(const std::vector<OciSnapshot>& snapshots,
                         const std::function<bool(const StoredMember&)>& stored);
// The chunks of S with a lookup key (layer annotation k_raw_annotation), in layer order.
std::vector<CachedChunk> snapshot_chunks(const OciSnapshot& s);

// The layer (or config) descriptor of archive member NAME: its SHA-256, size and header
// attributes (as annotations); and back, member I of S (0: manifest.json) as an entry.
Descriptor member_descriptor(const std::string& name, const std::string& sha256, uint64_t size,
                             const TarAttrs& attrs);
ArchiveEntry member_entry(const OciSnapshot& s, size_t i);

// The image manifest of a snapshot with CONFIG and LAYERS, its annotations taken from
// MANIFEST_JSON (manifest.json's text); throws when it is over what registries accept.
std::string image_manifest_text(const Descriptor& config, const std::vector<Descriptor>& layers,
                                const std::string& manifest_json);

// Writes an archive's members as blobs and, on close(), its image manifest, then tags it.
class OciSink : public EntrySink {
public:
  OciSink(OciLayout layout, std::string tag, bool overwrite, RawIndex known);

  void add(const std::string& name, std::span<const std::byte> data, const TarAttrs& attrs) override;
  void begin(const std::string& name, uint64_t size, const TarAttrs& attrs, StreamCheck check) override;
  void write(std::span<const std::byte> data) override;
  void close() override;
  bool wants_raw_hashes() const override { return true; }
  std::optional<StoredMember> find_raw(const std::string& raw_hash) const override;
  void add_stored(const std::string& name, const StoredMember& stored, const TarAttrs& attrs) override;

  const std::string& digest() const { return m_digest; } // the manifest's, after close()
  uint64_t blob_bytes_written() const { return m_written; }

private:
  void open(const std::string& name, uint64_t size, const TarAttrs& attrs, BlobCheck check);
  void finish_open();

  OciLayout m_layout;
  std::string m_tag;
  bool m_overwrite;
  RawIndex m_known;
  std::optional<Descriptor> m_config;
  std::string m_manifest_text; // manifest.json, for the annotations
  std::vector<Descriptor> m_layers;
  BlobBatch m_batch{m_layout};
  std::optional<BlobWriter> m_open;
  uint64_t m_open_left = 0;
  uint64_t m_written = 0;
  std::string m_digest;
};

// Reads a repository snapshot's members from their blobs, for ArchiveReader (which checks
// every member's SHA-256, that is its digest).
class OciSource : public EntrySource {
public:
  // LOCK (may be null) is held while the snapshot is read.
  OciSource(OciLayout layout, OciSnapshot snapshot, std::string what,
            std::unique_ptr<FileLock> lock = nullptr);
  bool next(ArchiveEntry& entry) override;
  size_t read(std::span<std::byte> buf) override;

private:
  OciLayout m_layout;
  OciSnapshot m_snapshot;
  std::string m_what;
  size_t m_next = 0; // 0: the config; then layer m_next - 1
  std::unique_ptr<FileLock> m_lock;
  Fd m_blob;
  uint64_t m_left = 0;
};

} // namespace ks
