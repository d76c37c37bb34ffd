// A snapshot in a registry: the same image manifest as in an OCI image layout
// (oci_snapshot.hpp), one blob per archive member, pushed and pulled over the distribution
// API. A push uploads blobs as the save produces them, on a few connections in parallel with
// a bounded queue, and puts the manifest last: an interrupted push publishes nothing. A pull
// streams each blob in ranged pieces; ArchiveReader checks every member against its digest.
#pragma once

#include "storage/entry_io.hpp"
#include "storage/store/oci_snapshot.hpp"
#include "storage/store/registry.hpp"

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace ks {

// Every kata-snapshot snapshot the repository's tags name (other artifacts skipped). A
// repository that does not exist: none, or (MISSING error) exit 7.
enum class Missing { empty, error };
std::vector<OciSnapshot> read_snapshots(Registry& registry, Missing missing);
// The snapshot TAG or DIGEST names, or with both empty the newest one; exit 7 when none.
OciSnapshot find_snapshot(Registry& registry, const std::string& tag, const std::string& digest);

class UploadPool;

class RegistrySink : public EntrySink {
public:
  // Pushes to REGISTRY under TAG (replacing it when OVERWRITE); KNOWN: chunks it holds.
  // MOUNT_FROM: another repository of the same registry whose blobs are mounted (a copy).
  RegistrySink(Registry registry, const RegistryOptions& options, std::string tag, RawIndex known,
               std::string mount_from = {});
  ~RegistrySink() override;

  void add(const std::string& name, std::span<const std::byte> data, const TarAttrs& attrs) override;
  void begin(const std::string& name, uint64_t size, const TarAttrs& attrs, StreamCheck check) override;
  void write(std::span<const std::byte> data) override;
  void close() override;
  bool wants_raw_hashes() const override { return true; }
  std::optional<StoredMember> find_raw(const std::string& raw_hash) const override;
  void add_stored(const std::string& name, const StoredMember& stored, const TarAttrs& attrs) override;

  const std::string& digest() const { return m_digest; } // the manifest's, after close()
  uint64_t blob_bytes_written() const;
  uint64_t blobs_mounted() const { return m_mounted; }

private:
  void flush_piece();
  void finish_open();

  Registry m_registry; // this thread's connection: streamed members, the manifest
  std::string m_tag;
  RawIndex m_known;
  std::string m_mount_from;
  uint64_t m_mounted = 0;
  std::unique_ptr<UploadPool> m_pool;
  std::optional<Descriptor> m_config;
  std::string m_manifest_text;
  std::vector<Descriptor> m_layers;
  std::set<std::string> m_sent; // digests uploaded or found by this push
  // The member being streamed: its upload (none when the registry has it), piece, hash.
  std::optional<Registry::Upload> m_upload;
  std::optional<Descriptor> m_open;
  uint64_t m_open_left = 0;
  Bytes m_piece;
  Sha256 m_hash;
  bool m_check_open = true; // the open member is hashed here (not by its source)
  uint64_t m_streamed_bytes = 0;
  std::string m_digest;
};

class Prefetcher;

// Reads a registry snapshot's members from their blobs. Once data is read, the blobs ahead
// (chunks) are fetched on a few connections of their own, within a bounded window; a large
// blob (a share) is read in ranged pieces on this connection, where a retry resumes.
class RegistrySource : public EntrySource {
public:
  RegistrySource(Registry registry, RegistryOptions options, OciSnapshot snapshot);
  ~RegistrySource() override;
  bool next(ArchiveEntry& entry) override;
  size_t read(std::span<std::byte> buf) override;

private:
  Registry m_registry;
  RegistryOptions m_options;
  OciSnapshot m_snapshot;
  std::unique_ptr<Prefetcher> m_prefetch; // started by the first read()
  size_t m_next = 0;
  const Descriptor* m_blob = nullptr;
  uint64_t m_offset = 0; // of m_piece in the blob
  Bytes m_piece;
  size_t m_piece_used = 0;
};

} // namespace ks
