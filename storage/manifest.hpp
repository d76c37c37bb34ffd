// manifest.json: what a snapshot is and what is needed to load it (docs/archive-format.md).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace ks {

using Json = nlohmann::json;

inline constexpr const char* k_format_name = "kata-snapshot";
// The newest format version this tool reads. Version 2 added the mapped-ram vmstate layout
// (manifest vmstate.layout); archives holding the plain stream are still written as
// version 1, so that older readers load them.
inline constexpr int k_format_version = 2;
inline constexpr int k_format_version_stream = 1;

inline constexpr const char* k_manifest_member = "manifest.json";
inline constexpr const char* k_index_member = "index.json";
inline constexpr const char* k_vmstate_prefix = "vmstate/";
inline constexpr const char* k_sha256_attr = "user.ksnap.sha256";

// Name of vmstate chunk N: vmstate/000042.zst
std::string vmstate_member_name(uint64_t n);

// Throws Error(exit 3) when MANIFEST is not one this version can load: wrong format name,
// a newer format version, or required fields missing.
void validate_manifest(const Json& manifest);

// Host facts recorded in the manifest and checked by `verify --host`.
Json describe_host();

// UTC timestamp, RFC 3339.
std::string utc_now();

} // namespace ks
