// `kata-snapshot save`: the whole VM into a .ksnap archive.
#pragma once

#include "storage/store/registry.hpp"

#include "snapshot/live/precopy.hpp"
#include "snapshot/quiesce.hpp"

#include "storage/sealing.hpp"

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace ks {

enum class SaveMode { automatic, stop, live };
enum class AfterSave { resume, pause, quit };
enum class Overwrite { no, yes };
// automatic: multifd when QEMU has it (9.0 and later), the plain stream otherwise.
enum class VmstateLayout { automatic, stream, mapped_ram, multifd, shared_ram };

struct SaveOptions {
  std::string qmp_socket;
  std::string output;       // a reference (storage/store/reference.hpp): PATH, -, oci:DIR[:TAG], docker://
  RegistryOptions registry; // a docker:// output's access
  SaveMode mode = SaveMode::automatic;
  VmstateLayout layout = VmstateLayout::automatic;

  AfterSave after = AfterSave::resume;
  QuiescePolicy quiesce = QuiescePolicy::automatic;
  std::map<std::string, std::string> share_policy; // tag -> full|none
  int compress_level = 1;
  unsigned threads = 0;  // 0: every core
  size_t chunk_size = 0; // 0: 8 MiB, or 1 MiB and up with RAM into a repository
  std::map<std::string, std::string> labels;
  std::string sign_key;         // an Ed25519 private key (PEM) that signs index.json, or ""
  EncryptionOptions encryption; // whom the snapshot is encrypted to (none: not encrypted)
  Overwrite overwrite = Overwrite::no;
  bool progress = false; // a progress line on stderr
  bool verbose = false;  // step timings on stderr
  nlohmann::json kata;   // --sandbox: what sandbox_record() says about it (null otherwise)
  bool quiet = false;    // no notices on stderr
  PrecopyLimits live_limits;
  std::chrono::milliseconds lock_wait{std::chrono::seconds(60)}; // for a repository's lock
};

struct SaveResult {
  std::string output;
  nlohmann::json destination; // output (with the tag a repository save got), tag, digest
  uint64_t archive_bytes = 0;
  uint64_t stored_bytes = 0; // of which a repository held already (not written again)
  uint64_t vmstate_bytes = 0;
  uint64_t chunks = 0;
  double seconds = 0;
  nlohmann::json quiesce;
  std::string vm_state; // running, paused, or shut down
  // How long the vCPUs were stopped, when the save stopped them and resumed them again.
  std::optional<double> vm_paused_seconds;
  std::string mode;    // stop | live
  nlohmann::json live; // live mode: mechanism, instant, passes, QEMU's downtime, share_seconds
};

SaveResult save(const SaveOptions& options);

} // namespace ks
