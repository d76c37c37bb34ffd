// manifest.json: what a snapshot is and what is needed to load it (docs/archive-format.md).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace ks {

using Json = nlohmann::json;

inline constexpr const char* k_format_name = "kata-snapshot";
// The newest format version this tool reads. Version 2 added the mapped-ram vmstate layout
// (manifest vmstate.layout), version 3 the multifd layout (several chunk series), version 4
// the shares of a live save as base + delta (the delta may follow vmstate chunks). Each
// archive carries the lowest version that describes it, so that older readers load what
// they can: the plain stream is still version 1. Version 5: a mapped-ram stream QEMU wrote
// over multifd channels (manifest vmstate.channels), which it must read back the same way.
// Version 7: a container checkpoint (manifest kind "container"; snapshot/container.hpp).
// Version 8: the shared-ram layout (guest RAM read from its shared memory files in place,
// manifest vmstate.memory; snapshot/shared_ram.hpp).
inline constexpr int k_format_version = 8; // k_format_version_encrypted (storage/sealing.hpp) is 6
inline constexpr int k_format_version_stream = 1;
inline constexpr int k_format_version_mapped_ram = 2;
inline constexpr int k_format_version_multifd = 3;
inline constexpr int k_format_version_share_delta = 4;
inline constexpr int k_format_version_mapped_ram_multifd = 5;
inline constexpr int k_format_version_container = 7;
inline constexpr int k_format_version_shared_ram = 8;

// What a snapshot holds (manifest "kind"): a whole VM (the default, when absent) or one
// container's CRIU checkpoint.
inline constexpr const char* k_kind_vm = "vm";
inline constexpr const char* k_kind_container = "container";
std::string manifest_kind(const Json& manifest);

inline constexpr const char* k_manifest_member = "manifest.json";
inline constexpr const char* k_index_member = "index.json";
inline constexpr const char* k_vmstate_prefix = "vmstate/";
inline constexpr const char* k_sha256_attr = "user.ksnap.sha256";
// A vmstate chunk's uncompressed BLAKE3 (util/blake3.hpp): kept by repositories (a layer
// annotation), which look it up to reuse a stored chunk instead of compressing it again.
// Never in a .ksnap tar.
inline constexpr const char* k_raw_hash_attr = "user.ksnap.raw_blake3";
// index.json's header: its Ed25519 signature, "ed25519 KEY_ID BASE64" (util/signature.hpp).
inline constexpr const char* k_signature_attr = "user.ksnap.signature";
// An encrypted snapshot's (storage/sealing.hpp): a member's sealed key, and the HMAC of
// manifest.json and of index.json.
inline constexpr const char* k_member_key_attr = "user.ksnap.key";
inline constexpr const char* k_mac_attr = "user.ksnap.mac";

// Name of vmstate chunk N: vmstate/000042.zst. With the multifd layout, chunk N of series
// S > 0 (QEMU's multifd channel S - 1) is vmstate/multifd-<S-1>/000042.zst.
std::string vmstate_member_name(uint64_t n, unsigned series = 0);

// The series of a vmstate chunk's name (0 for vmstate/NNNNNN.zst), or nullopt when NAME
// is not a well-formed vmstate chunk name.
std::optional<unsigned> vmstate_series(const std::string& name);

// The shared-ram layout's vmstate.memory ([{"id", "bytes"}], chunks 0 to bytes / chunk_size
// - 1 of the first block, then the next; the device state follows): checked (exit 3 when
// malformed: ids QEMU accepts, unique, sizes positive multiples of the chunk size). Returns
// the total bytes.
uint64_t shared_ram_bytes(const Json& vmstate);

// Throws Error(exit 3) when MANIFEST is not one this version can load: wrong format name,
// a newer format version, required fields missing or of the wrong type.
void validate_manifest(const Json& manifest);

// Host facts recorded in the manifest and checked by `verify --host`.
Json describe_host();

// UTC timestamp, RFC 3339, in whole seconds or with milliseconds.
enum class Precision { seconds, milliseconds };
std::string utc_now(Precision precision = Precision::seconds);

} // namespace ks
