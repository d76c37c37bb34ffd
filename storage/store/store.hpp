// Where snapshots live, behind one interface per direction: a .ksnap file, a pipe, or an
// OCI image layout (oci:DIR[:TAG]). Commands open a reference here and see an ArchiveReader
// or an ArchiveWriter, whatever the reference names.
#pragma once

#include "storage/archive_reader.hpp"
#include "storage/archive_writer.hpp"
#include "storage/store/reference.hpp"
#include "storage/store/registry.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ks {

// How long a repository command waits for another one's lock before exit 4.
inline constexpr std::chrono::seconds k_default_lock_wait{60};

// The snapshot REF names, opened for reading; its manifest is read and checked.
// REGISTRY: how to reach a docker:// reference's registry.
std::unique_ptr<ArchiveReader> open_snapshot(const std::string& ref, const RegistryOptions& registry = {});

// Every member's header and index.json of the snapshot REF (with the signature and MAC in
// its header), read before the rest: a file's members are skipped over, a repository's
// manifest and index blob read directly. So a load checks a signature, and an encrypted
// snapshot's seals, before QEMU starts. A pipe cannot be read twice: a usage Error naming
// WHY the peek was wanted.
struct PeekedIndex {
  std::vector<ArchiveEntry> entries; // manifest.json first, index.json last
  std::string text;                  // index.json
  std::string signature;
};
PeekedIndex peek_index(const std::string& ref, const std::string& why, const RegistryOptions& registry = {});

// Checks, with READER's opener (an unlocked encrypted snapshot), every header of PEEKED:
// index.json's MAC, every member listed in it in order, each member's sealed key opening
// for exactly its place. Throws (exit 3) naming the first that fails.
void check_sealed_headers(const PeekedIndex& peeked, const ArchiveReader& reader);

struct OutputOptions {
  bool overwrite = false; // replace a file, or a repository's tag
  std::chrono::milliseconds lock_wait = k_default_lock_wait;
  std::string purpose = "save"; // for the repository lock's holder record
  RegistryOptions registry;     // a docker:// reference's access
  std::string copied_from;      // copy: the source; a repository of the same registry lends its blobs
};

class SnapshotOutput {
public:
  // Opens REF for writing, before anything is paused: checks it can be written (a file that
  // does not exist yet, a terminal refused for -, a repository locked for this save).
  static std::unique_ptr<SnapshotOutput> open(const std::string& ref, const OutputOptions& options);
  virtual ~SnapshotOutput() = default;

  // Waits for what the output reads from where the snapshot goes before it starts (a
  // repository's known chunks, read in the background since open), and rethrows its
  // failure: a save calls it before it pauses the VM. start() does it too.
  virtual void prepare() {}
  // The archive's writer, once its manifest is known (or its exact bytes, for a copy).
  virtual ArchiveWriter& start(const ArchiveWriter::ManifestText& manifest) = 0;
  ArchiveWriter& start(const Json& manifest) {
    return start(ArchiveWriter::ManifestText{manifest.dump(2) + "\n"});
  }
  // After the writer's finish(): the snapshot appears under its final name.
  virtual void commit() = 0;
  // Removes what an unfinished save wrote under temp names (also from cleanup paths).
  virtual void discard() noexcept = 0;

  // Where a save stages large temporary files (mapped-ram, share captures).
  virtual std::string temp_dir() const = 0;
  // Temp files a watchdog removes when this process is killed.
  virtual std::vector<std::string> temp_paths() const = 0;
  // Free space where the snapshot goes, when known.
  virtual std::optional<uint64_t> free_bytes() const = 0;
  // The destination's name for messages, and what the result reports about it.
  virtual std::string name() const = 0;
  virtual Json describe() const = 0;
  // A repository: content-addressed, where the mapped-ram layout makes saves incremental.
  virtual bool deduplicates() const = 0;
};

} // namespace ks
