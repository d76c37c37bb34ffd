// Keeping a snapshot repository (an OCI image layout, or a registry's repository): copy
// between references, list, prune, check, and gc (image layouts only). Saves hold an image
// layout's lock shared; prune and gc exclusive.
#pragma once

#include "storage/manifest.hpp"
#include "storage/store/registry.hpp"
#include "storage/store/retention.hpp"

#include <chrono>
#include <string>

namespace ks {

struct RepoOptions {
  std::chrono::milliseconds lock_wait{std::chrono::seconds(60)};
  bool dry_run = false;
  bool overwrite = false;        // copy: replace the destination
  RegistryOptions registry;      // a docker:// repository's (or copy's source's) access
  RegistryOptions dest_registry; // copy: a docker:// destination's access
  bool progress = false;         // copy: a progress line on a terminal
};

// Copies snapshot SRC to DST (any references), member by member, every member checked.
Json copy_snapshot(const std::string& src, const std::string& dst, const RepoOptions& options);

// Every snapshot of the repository REF names: tag, digest, created, host, sandbox, mode,
// labels, size and the bytes only it holds. Newest last.
Json list_snapshots(const std::string& ref, const RegistryOptions& registry = {});

// Untags the snapshots POLICY does not keep; their blobs stay until gc.
Json prune_snapshots(const std::string& ref, const KeepPolicy& policy, const RepoOptions& options);

// Every manifest parses and every blob it needs is there with the right size; READ_DATA
// also hashes every blob and decompresses every vmstate chunk. "ok" false: see "problems".
Json check_repository(const std::string& ref, bool read_data, const RegistryOptions& registry = {});

// Removes the blobs no manifest references, and what unfinished saves left behind.
Json gc_repository(const std::string& ref, const RepoOptions& options);

} // namespace ks
