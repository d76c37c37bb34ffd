// Container mode: one container of a running VM checkpointed with CRIU inside the guest
// (through kata-snapshot-helper), into the same archive format as a whole VM (manifest kind
// "container"), laid out as checkpointctl, CRI-O and Podman read a container checkpoint:
// config.dump, spec.dump, checkpoint/ (CRIU's images), stats-dump. And back, into a running
// VM where the container's bundle exists and it is not running. (docs/containers.md)
#pragma once

#include "snapshot/guest_ops.hpp"
#include "snapshot/save.hpp"
#include "storage/store/registry.hpp"

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace ks {

inline constexpr const char* k_config_dump_member = "config.dump";
inline constexpr const char* k_spec_dump_member = "spec.dump";
inline constexpr const char* k_stats_dump_member = "stats-dump";
inline constexpr const char* k_checkpoint_prefix = "checkpoint/";

struct ContainerSaveOptions {
  GuestTarget target;
  std::string container;
  std::string output; // a reference: PATH, -, oci:DIR[:TAG], docker://
  RegistryOptions registry;
  AfterSave after = AfterSave::resume; // pause: left frozen; quit: stopped once stored
  std::map<std::string, std::string> labels;
  nlohmann::json kata; // --sandbox: what sandbox_record() says about it
  std::string sign_key;
  Overwrite overwrite = Overwrite::no;
  std::chrono::milliseconds lock_wait{std::chrono::seconds(60)};
};

struct ContainerSaveResult {
  std::string output;
  nlohmann::json destination;
  uint64_t archive_bytes = 0;
  uint64_t image_bytes = 0;
  size_t images = 0;
  double seconds = 0;
  double dump_seconds = 0;     // CRIU in the guest
  double transfer_seconds = 0; // the images to the host
  std::string state;           // the container afterwards: running, paused or stopped
  nlohmann::json to_json() const;
};

ContainerSaveResult save_container(const ContainerSaveOptions& options);

struct ContainerLoadOptions {
  std::string input;
  RegistryOptions registry;
  GuestTarget target;
  std::string require_signature; // a public key index.json must be signed with
};

struct ContainerLoadResult {
  std::string container;
  long pid = 0; // the restored init, in the guest
  std::string state;
  uint64_t image_bytes = 0;
  double seconds = 0;
  double transfer_seconds = 0;
  double restore_seconds = 0; // CRIU in the guest
  nlohmann::json to_json() const;
};

ContainerLoadResult load_container(const ContainerLoadOptions& options);

// What the helper reports: CRIU's state in the guest and every container with a bundle.
nlohmann::json list_containers(const GuestTarget& target);

} // namespace ks
