// `kata-snapshot load`: a new QEMU (and virtiofsd) from a .ksnap archive, left running.
#pragma once

#include "storage/store/registry.hpp"

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ks {

struct LoadOptions {
  std::string archive;                           // a reference: a path, "-" for stdin, oci:, docker://
  RegistryOptions registry;                      // a docker:// reference's access
  std::string run_dir;                           // empty: a new directory under /run/kata-snapshot
  std::string qmp_socket;                        // empty: RUN_DIR/qmp.sock
  std::map<std::string, std::string> share_dirs; // tag -> directory
  bool paused = false;
  std::string qemu;
  std::string virtiofsd;
  bool force = false;
  unsigned threads = 0;
  std::string name;              // --sandbox ID: the restored VM is named sandbox-ID
  std::string netns;             // --netns: where taps are re-created and QEMU runs (a name or a path)
  std::string require_signature; // an Ed25519 public key (PEM) that must have signed it, or ""
  std::string decrypt_key;       // an encrypted snapshot's: X25519 private key (PEM) or key file

  bool progress = false;
  bool verbose = false; // step timings on stderr
};

struct LoadResult {
  int qemu_pid = -1;
  std::string qmp;
  std::string run_dir;
  std::vector<int> virtiofsd_pids;
  std::string status;
  double seconds = 0;
  nlohmann::json guest; // post-restore refresh report
  nlohmann::json to_json() const;
};

LoadResult load(const LoadOptions& options);

} // namespace ks
