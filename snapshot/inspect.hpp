// `inspect` (manifest only) and `verify` (every byte) of an archive.
#pragma once

#include "storage/store/registry.hpp"

#include <nlohmann/json.hpp>
#include <string>

namespace ks {

// The manifest of ARCHIVE ("-" for stdin), checked as load would.
nlohmann::json read_manifest(const std::string& archive, const RegistryOptions& registry = {});

// Reads the whole archive: member hashes, the index, each chunk's zstd frame and the QEMU
// stream header. With HOST, also whether this host can load it. Throws (exit 3) on damage.
// KEY: a public key whose signature the snapshot must carry ("" for none). An encrypted
// snapshot is opened with DECRYPT_KEY and checked through; without it, only the sealed
// members' hashes and the index can be.
nlohmann::json verify_archive(const std::string& archive, bool host, unsigned threads,
                              const RegistryOptions& registry = {}, const std::string& key = {},
                              const std::string& decrypt_key = {});

} // namespace ks
