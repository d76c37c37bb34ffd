#include "storage/store/oci_snapshot.hpp"

#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/json_fields.hpp"

#include <algorithm>
#include <fcntl.h>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace ks {

namespace {

[[noreturn]] void damaged(const std::string& what, const std::string& why) {
  throw Error(what + " is damaged: " + why, ExitCode::archive_invalid);
}

// A member's header attributes and the layer annotations they become.
constexpr std::pair<const char*, const char*> k_attr_annotations[] = {
  {k_raw_hash_attr, k_raw_annotation},
  {k_signature_attr, k_signature_annotation},
  {k_member_key_attr, k_key_annotation},
  {k_mac_attr, k_mac_annotation},
};

std::string attr(const TarAttrs& attrs, const char* key) {
  auto it = attrs.find(key);
  return it == attrs.end() ? std::string() : it->second;
}

std::span<const std::byte> as_bytes(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

} // namespace

std::string member_media_type(const std::string& name) {
  if (name == k_manifest_member) {
    return k_config_type;
  }
  if (name == k_index_member) {
    return "application/vnd.kata-snapshot.index.v1+json";
  }
  if (name.starts_with(k_vmstate_prefix)) {
    return "application/vnd.kata-snapshot.vmstate.v1+zstd";
  }
  if (name.ends_with(".tar.zst")) {
    return "application/vnd.kata-snapshot.share.v1.tar+zstd";
  }
  if (name.ends_with(".json")) {
    return "application/vnd.kata-snapshot.member.v1+json";
  }
  return "application/octet-stream";
}

std::string OciSnapshot::created() const {
  auto it = annotations.find(k_created_annotation);
  return it != annotations.end() && it->is_string() ? it->get<std::string>() : std::string();
}

uint64_t OciSnapshot::size() const {
  uint64_t total = manifest.size + config.size;
  for (const auto& l : layers) {
    total += l.size;
  }
  return total;
}

namespace {

OciSnapshot read_snapshot(const Descriptor& manifest, std::span<const std::byte> data,
                          const std::string& what) {
  if (manifest.media_type != k_oci_manifest_type) {
    damaged(what, "its media type is " + manifest.media_type + ", not an image manifest");
  }
  Json m = Json::parse(std::string(reinterpret_cast<const char*>(data.data()), data.size()), nullptr, false);
  if (!m.is_object() || json_unsigned(m, "schemaVersion", 0) != 2 ||
      json_string(m, "mediaType") != k_oci_manifest_type) {
    damaged(what, "its manifest is not an OCI image manifest");
  }
  if (json_string(m, "artifactType") != k_artifact_type) {
    throw Error(what + " is not a kata-snapshot snapshot (artifactType \"" + json_string(m, "artifactType") +
                  "\")",
                ExitCode::archive_invalid);
  }
  OciSnapshot s;
  s.manifest = manifest;
  s.tag = manifest.annotation(k_oci_ref_name);
  s.config = Descriptor::parse(m.value("config", Json()), what);
  if (s.config.media_type != k_config_type) {
    damaged(what, "its config is " + s.config.media_type + ", not " + k_config_type);
  }
  if (!m.contains("layers") || !m["layers"].is_array()) {
    damaged(what, "its manifest has no layers");
  }
  for (const auto& l : m["layers"]) {
    Descriptor d = Descriptor::parse(l, what);
    std::string title = d.annotation(k_title_annotation);
    if (title.empty() || d.media_type != member_media_type(title)) {
      damaged(what, "layer " + d.digest + " has no member name, or a media type that does not fit it");
    }
    s.layers.push_back(std::move(d));
  }
  if (s.layers.empty() || s.layers.back().annotation(k_title_annotation) != k_index_member) {
    damaged(what, "its last layer is not index.json");
  }
  s.annotations = m.value("annotations", Json::object());
  if (!s.annotations.is_object()) {
    damaged(what, "its annotations are not an object");
  }
  return s;
}

} // namespace

OciSnapshot parse_snapshot(const Descriptor& manifest, std::span<const std::byte> data,
                           const std::string& what) {
  try {
    return read_snapshot(manifest, data, what);
  } catch (const Json::exception& e) {
    damaged(what, "its manifest has a field of the wrong type (" + json_problem(e) + ")");
  }
}

OciSnapshot read_snapshot(const OciLayout& layout, const Descriptor& manifest) {
  std::string what = "snapshot " + manifest.digest + " in " + layout.dir();
  return parse_snapshot(manifest, layout.read_blob(manifest, k_max_manifest_size, what), what);
}

std::vector<OciSnapshot> read_snapshots(const OciLayout& layout) {
  std::vector<OciSnapshot> out;
  const Json index = layout.read_index();
  for (const auto& j : index["manifests"]) {
    Descriptor d = Descriptor::parse(j, layout.dir() + "/index.json");
    if (d.media_type == k_oci_manifest_type) {
      OciSnapshot s = read_snapshot(layout, d);
      out.push_back(std::move(s));
    }
  }
  return out;
}

OciSnapshot find_snapshot(const OciLayout& layout, const std::string& tag) {
  std::optional<OciSnapshot> found;
  const Json index = layout.read_index();
  for (const auto& j : index["manifests"]) {
    Descriptor d = Descriptor::parse(j, layout.dir() + "/index.json");
    if (!tag.empty() && d.annotation(k_oci_ref_name) != tag) {
      continue;
    }
    OciSnapshot s = read_snapshot(layout, d);
    if (!tag.empty()) {
      return s;
    }
    if (!found || s.created() > found->created()) {
      found = std::move(s);
    }
  }
  if (!found) {
    throw Error(tag.empty() ? "oci:" + layout.dir() + " holds no snapshot"
                            : "oci:" + layout.dir() + " has no snapshot tagged " + tag,
                ExitCode::archive_invalid,
                tag.empty() ? "" : "see the tags with: kata-snapshot list oci:" + layout.dir());
  }
  return *found;
}

namespace {

std::vector<CachedChunk> layer_chunks(const std::vector<Descriptor>& layers) {
  std::vector<CachedChunk> out;
  for (const auto& l : layers) {
    if (std::string raw = l.annotation(k_raw_annotation); !raw.empty()) {
      out.push_back({std::move(raw), StoredMember{l.hex(), l.size}});
    }
  }
  return out;
}

// Adds CHUNKS to INDEX: the first snapshot to hold a key gives its blob, when STORED says it
// is there.
void add_chunks(RawIndex& index, std::vector<CachedChunk>&& chunks,
                const std::function<bool(const StoredMember&)>& stored) {
  for (auto& c : chunks) {
    if (!index.contains(c.raw) && stored(c.stored)) {
      index.emplace(std::move(c.raw), std::move(c.stored));
    }
  }
}

} // namespace

std::vector<CachedChunk> snapshot_chunks(const OciSnapshot& s) {
  return layer_chunks(s.layers);
}

RawIndex build_raw_index(const std::vector<OciSnapshot>& snapshots,
                         const std::function<bool(const StoredMember&)>& stored) {
  RawIndex index;
  for (const auto& s : snapshots) {
    add_chunks(index, snapshot_chunks(s), stored);
  }
  return index;
}

RawIndex build_raw_index(const OciLayout& layout) {
  RawIndex index;
  auto stored = [&](const StoredMember& m) { return layout.blob_size("sha256:" + m.sha256) == m.size; };
  const Json idx = layout.read_index();
  std::set<std::string> seen; // a manifest under several tags is read once
  for (const auto& j : idx["manifests"]) {
    Descriptor d = Descriptor::parse(j, layout.dir() + "/index.json");
    if (d.media_type != k_oci_manifest_type || !seen.insert(d.digest).second) {
      continue;
    }
    std::optional<std::vector<CachedChunk>> chunks = read_chunk_cache(layout, d);
    if (!chunks) { // parsed once, then cached: the manifest is named by its digest, it never changes
      chunks = snapshot_chunks(read_snapshot(layout, d));
      write_chunk_cache(layout, d, *chunks);
    }
    add_chunks(index, std::move(*chunks), stored);
  }
  return index;
}

Descriptor member_descriptor(const std::string& name, const std::string& sha256, uint64_t size,
                             const TarAttrs& attrs) {
  Descriptor d{member_media_type(name), sha256_digest(sha256), size, Json::object()};
  if (name != k_manifest_member) {
    d.annotations[k_title_annotation] = name;
  }
  for (const auto& [key, annotation] : k_attr_annotations) {
    if (std::string value = attr(attrs, key); !value.empty()) {
      d.annotations[annotation] = value;
    }
  }
  return d;
}

ArchiveEntry member_entry(const OciSnapshot& s, size_t i) {
  const Descriptor& d = i == 0 ? s.config : s.layers[i - 1];
  ArchiveEntry entry;
  entry.name = i == 0 ? std::string(k_manifest_member) : d.annotation(k_title_annotation);
  entry.size = d.size;
  entry.attrs = {{k_sha256_attr, d.hex()}};
  for (const auto& [key, annotation] : k_attr_annotations) {
    if (std::string value = d.annotation(annotation); !value.empty()) {
      entry.attrs[key] = value;
    }
  }
  return entry;
}

OciSink::OciSink(OciLayout layout, std::string tag, bool overwrite, RawIndex known)
  : m_layout(std::move(layout)), m_tag(std::move(tag)), m_overwrite(overwrite), m_known(std::move(known)) {}

// A member handed over whole was hashed from these very bytes by the archive writer's caller
// (a chunk just compressed, manifest.json, index.json): not hashed again on the hot path.
// Members streamed in (shares) are checked against their digest as they come, unless their
// source checks them (a copy).
void OciSink::add(const std::string& name, std::span<const std::byte> data, const TarAttrs& attrs) {
  open(name, data.size(), attrs, BlobCheck::trusted);
  write(data);
}

void OciSink::begin(const std::string& name, uint64_t size, const TarAttrs& attrs, StreamCheck check) {
  open(name, size, attrs, check == StreamCheck::source ? BlobCheck::trusted : BlobCheck::digest);
}

void OciSink::open(const std::string& name, uint64_t size, const TarAttrs& attrs, BlobCheck check) {
  KS_ASSERT(!m_open);
  Descriptor d = member_descriptor(name, attr(attrs, k_sha256_attr), size, attrs);
  if (!m_config) {
    KS_ASSERT(name == k_manifest_member);
    m_config = d;
  } else {
    m_layers.push_back(d);
  }
  m_open.emplace(m_batch.begin(d.digest, size, check));
  m_open_left = size;
  if (size == 0) {
    finish_open();
  }
}

void OciSink::write(std::span<const std::byte> data) {
  KS_ASSERT(m_open && data.size() <= m_open_left);
  m_open->write(data);
  if (m_layers.empty()) { // manifest.json, the config: its facts become annotations
    m_manifest_text.append(reinterpret_cast<const char*>(data.data()), data.size());
  }
  m_open_left -= data.size();
  if (m_open_left == 0) {
    finish_open();
  }
}

void OciSink::finish_open() {
  std::string temp = m_open->finish();
  if (!temp.empty()) {
    m_written += m_layers.empty() ? m_config->size : m_layers.back().size;
  }
  m_batch.add(m_layers.empty() ? m_config->digest : m_layers.back().digest, std::move(temp));
  m_open.reset();
}

std::optional<StoredMember> OciSink::find_raw(const std::string& raw_hash) const {
  auto it = m_known.find(raw_hash);
  return it == m_known.end() ? std::nullopt : std::optional(it->second);
}

void OciSink::add_stored(const std::string& name, const StoredMember& stored, const TarAttrs& attrs) {
  KS_ASSERT(m_config && !m_open);
  m_layers.push_back(member_descriptor(name, stored.sha256, stored.size, attrs));
}

namespace {

// The facts of manifest.json (TEXT) a registry UI or `list` shows without reading it.
Json snapshot_annotations(const std::string& text) {
  Json m = Json::parse(text, nullptr, false);
  Json a = Json::object();
  if (!m.is_object()) {
    return a;
  }
  a[k_created_annotation] = m.value("created", "");
  a["io.kata-snapshot.host"] = m.value("host", Json::object()).value("hostname", "");
  a["io.kata-snapshot.qemu-version"] = m.value("qemu", Json::object()).value("version", "");
  a["io.kata-snapshot.mode"] = m.value("mode", "");
  a["io.kata-snapshot.kind"] = manifest_kind(m);
  if (const Json c = m.value("container", Json()); c.is_object() && c.value("id", Json()).is_string()) {
    a["io.kata-snapshot.container"] = c["id"];
  }
  a["io.kata-snapshot.ram-bytes"] = std::to_string(m.value("vm", Json::object()).value("ram_bytes", 0ull));
  Json kata = m.value("kata", Json());
  if (kata.is_object() && kata.contains("sandbox") && kata["sandbox"].is_string()) {
    a["io.kata-snapshot.sandbox"] = kata["sandbox"];
  }
  const Json labels = m.value("labels", Json::object());
  if (labels.is_object()) {
    for (auto it = labels.begin(); it != labels.end(); ++it) {
      if (it->is_string()) {
        a[k_label_annotation_prefix + it.key()] = *it;
      }
    }
  }
  return a;
}

} // namespace

std::string image_manifest_text(const Descriptor& config, const std::vector<Descriptor>& layers,
                                const std::string& manifest_json) {
  Json list = Json::array();
  for (const auto& l : layers) {
    list.push_back(l.to_json());
  }
  Json manifest = {{"schemaVersion", 2},
                   {"mediaType", k_oci_manifest_type},
                   {"artifactType", k_artifact_type},
                   {"config", config.to_json()},
                   {"layers", list},
                   {"annotations", snapshot_annotations(manifest_json)}};
  std::string text = manifest.dump();
  if (text.size() > k_max_manifest_size) {
    throw Error("the snapshot's OCI manifest would be " + std::to_string(text.size()) + " bytes, over the " +
                  std::to_string(k_max_manifest_size) + " registries accept",
                ExitCode::failed, "save with a larger --chunk-size");
  }
  return text;
}

void OciSink::close() {
  KS_ASSERT(m_config && !m_open);
  std::string text = image_manifest_text(*m_config, m_layers, m_manifest_text);
  m_digest = sha256_digest(sha256_hex(text));
  m_batch.publish(); // every blob it names is durable before the manifest is
  m_layout.put_blob(as_bytes(text), m_digest);
  Descriptor d{
    k_oci_manifest_type,
    m_digest,
    text.size(),
    {{k_oci_ref_name, m_tag},
     {k_created_annotation, snapshot_annotations(m_manifest_text).value(k_created_annotation, "")}}};
  m_layout.update_index([&](Json& index) {
    Json kept = Json::array();
    for (const auto& j : index["manifests"]) {
      bool same_tag =
        j.is_object() && j.value("annotations", Json::object()).value(k_oci_ref_name, "") == m_tag;
      if (same_tag && !m_overwrite) {
        throw Error("oci:" + m_layout.dir() + " already has a snapshot tagged " + m_tag, ExitCode::failed,
                    "pass --force to replace it, or choose another tag");
      }
      if (!same_tag) {
        kept.push_back(j);
      }
    }
    kept.push_back(d.to_json());
    index["manifests"] = kept;
  });
  write_chunk_cache(m_layout, d, layer_chunks(m_layers)); // the next save need not parse it
}

OciSource::OciSource(OciLayout layout, OciSnapshot snapshot, std::string what, std::unique_ptr<FileLock> lock)
  : m_layout(std::move(layout)), m_snapshot(std::move(snapshot)), m_what(std::move(what)),
    m_lock(std::move(lock)) {}

bool OciSource::next(ArchiveEntry& entry) {
  if (m_next > m_snapshot.layers.size()) {
    return false;
  }
  const Descriptor& d = m_next == 0 ? m_snapshot.config : m_snapshot.layers[m_next - 1];
  entry = member_entry(m_snapshot, m_next);
  ++m_next;
  m_blob = Fd(::open(m_layout.blob_path(d.digest).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (!m_blob || ::fstat(m_blob.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    damaged(m_what, "blob " + d.digest + " of member " + entry.name + " is missing");
  }
  if (static_cast<uint64_t>(st.st_size) != d.size) {
    damaged(m_what, "blob " + d.digest + " of member " + entry.name + " is " + std::to_string(st.st_size) +
                      " bytes, the manifest says " + std::to_string(d.size));
  }
  m_left = d.size;
  return true;
}

size_t OciSource::read(std::span<std::byte> buf) {
  size_t n = read_full(m_blob.get(), buf.first(std::min<uint64_t>(buf.size(), m_left)), m_what);
  m_left -= n;
  return n;
}

} // namespace ks
