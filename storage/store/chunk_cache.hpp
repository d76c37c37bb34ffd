// The known-chunk cache of an oci: repository: for each snapshot manifest, the lookup keys
// of its chunks and the blobs that hold them, in .kata-snapshot/chunks/<manifest hex>. A
// save looks each new chunk up among every snapshot of the repository; parsing every
// manifest for that cost about 5 ms per 1,000 chunks per snapshot, on every save (30 nightly
// snapshots of a 4 GiB sandbox: 0.6 s). A manifest never changes (it is named by its
// digest), so its entries are derived once and read back as plain lines.
//
// The file is only a cache: a missing, torn or tampered one (its SHA-256 trailer does not
// match, a line is not well formed, or it was made for a manifest of another size than
// index.json gives) is ignored, and the manifest is parsed, checked and cached again;
// whoever can write the cache can rewrite index.json just as well. gc removes the entries of
// manifests no longer in index.json.
#pragma once

#include "storage/entry_io.hpp"
#include "storage/store/oci_layout.hpp"

#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ks {

// One chunk of a snapshot: its lookup key (layer annotation io.kata-snapshot.raw-blake3) and blob.
struct CachedChunk {
  std::string raw;
  StoredMember stored;
  bool operator==(const CachedChunk&) const = default;
};

std::string chunk_cache_dir(const OciLayout& layout);

// The entries cached for the snapshot manifest MANIFEST (its digest and size, as index.json
// gives them), or nullopt when there are none to trust.
std::optional<std::vector<CachedChunk>> read_chunk_cache(const OciLayout& layout, const Descriptor& manifest);

// The entries in cache file TEXT: a header line with the manifest's size (MANIFEST_SIZE, or
// the file is refused), "<key> <blob hex> <size>" lines, and "end <count> <SHA-256 of the
// lines before>"; nullopt unless all of it checks out.
std::optional<std::vector<CachedChunk>> parse_chunk_cache(std::string_view text, uint64_t manifest_size);

// Stores CHUNKS as manifest MANIFEST's entries (temp file + rename; no fsync: a torn file
// fails its checksum). Best effort: a repository this user cannot write is simply not cached.
void write_chunk_cache(const OciLayout& layout, const Descriptor& manifest,
                       const std::vector<CachedChunk>& chunks) noexcept;

// Removes every cache file (and leftover temp file) whose manifest is not in KEEP (digests,
// "sha256:<hex>"); returns how many. For gc, under the exclusive lock.
size_t remove_stale_chunk_caches(const OciLayout& layout, const std::set<std::string>& keep);

} // namespace ks
