#include "storage/store/repository.hpp"

#include "storage/store/oci_layout.hpp"
#include "storage/store/oci_snapshot.hpp"
#include "storage/store/registry_snapshot.hpp"
#include "storage/store/store.hpp"
#include "util/blake3.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/file_lock.hpp"
#include "util/json_fields.hpp"
#include "util/progress.hpp"

#include <fcntl.h>
#include <functional>
#include <map>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace ks {

namespace {

// TEXT as a repository reference (oci: or docker://), or a usage Error.
Reference repository_reference(const std::string& text, bool tag_allowed) {
  Reference ref = parse_reference(text);
  if (ref.kind != Reference::Kind::oci && ref.kind != Reference::Kind::registry) {
    throw Error(text + " is not a repository", ExitCode::usage, "name one as oci:DIR or docker://HOST/REPO");
  }
  if ((!ref.tag.empty() || !ref.digest.empty()) && !tag_allowed) {
    throw Error(text + " names a snapshot; this command takes the whole repository", ExitCode::usage,
                "write " + ref.with_tag(""));
  }
  return ref;
}

FileLock lock_exclusive(const OciLayout& layout, const std::string& purpose, const RepoOptions& o) {
  return FileLock(layout.lock_path(),
                  {.mode = LockMode::exclusive,
                   .wait = o.lock_wait,
                   .purpose = purpose,
                   .what = "the repository " + layout.dir(),
                   .hint = "a save, prune or gc is running; wait for it, or pass a longer "
                           "--lock-wait"});
}

void note_taken_over(const FileLock& lock) {
  for (const auto& h : lock.taken_over()) {
    std::fprintf(stderr, "kata-snapshot: note: took over the repository lock left by %s, which is gone\n",
                 h.c_str());
  }
}

std::vector<std::string> blobs_of(const OciSnapshot& s) {
  std::vector<std::string> out = {s.manifest.digest, s.config.digest};
  for (const auto& l : s.layers) {
    out.push_back(l.digest);
  }
  return out;
}

// Every blob reachable from index.json, whatever the artifact: manifests and indexes are
// followed (config, layers, manifests). Throws (exit 3) when one cannot be read: a gc that
// cannot tell what is referenced must not remove anything.
std::set<std::string> referenced_blobs(const OciLayout& layout) {
  std::set<std::string> seen;
  std::vector<Descriptor> todo;
  const Json index = layout.read_index();
  for (const auto& j : index["manifests"]) {
    todo.push_back(Descriptor::parse(j, layout.dir() + "/index.json"));
  }
  while (!todo.empty()) {
    Descriptor d = todo.back();
    todo.pop_back();
    if (!seen.insert(d.digest).second) {
      continue;
    }
    bool nested =
      d.media_type.find("manifest") != std::string::npos || d.media_type.find("index") != std::string::npos;
    if (!nested || d.media_type == member_media_type(k_index_member)) {
      continue;
    }
    Bytes data = layout.read_blob(d, k_max_manifest_size, "oci:" + layout.dir());
    Json m =
      Json::parse(std::string(reinterpret_cast<const char*>(data.data()), data.size()), nullptr, false);
    if (!m.is_object()) {
      throw Error("oci:" + layout.dir() + " is damaged: manifest " + d.digest + " is not JSON",
                  ExitCode::archive_invalid);
    }
    if (m.contains("config")) {
      todo.push_back(Descriptor::parse(m["config"], d.digest));
    }
    for (const char* list : {"layers", "manifests"}) {
      if (m.contains(list) && m[list].is_array()) {
        for (const auto& e : m[list]) {
          todo.push_back(Descriptor::parse(e, d.digest));
        }
      }
    }
  }
  return seen;
}

Json labels_of(const OciSnapshot& s) {
  Json labels = Json::object();
  for (auto it = s.annotations.begin(); it != s.annotations.end(); ++it) {
    if (it.key().starts_with(k_label_annotation_prefix) && it->is_string()) {
      labels[it.key().substr(std::string(k_label_annotation_prefix).size())] = *it;
    }
  }
  return labels;
}

std::string annotation(const OciSnapshot& s, const std::string& key) {
  auto it = s.annotations.find(key);
  return it != s.annotations.end() && it->is_string() ? it->get<std::string>() : std::string();
}

} // namespace

Json copy_snapshot(const std::string& src, const std::string& dst, const RepoOptions& o) {
  std::unique_ptr<ArchiveReader> reader = open_snapshot(src, o.registry);
  std::unique_ptr<SnapshotOutput> out = SnapshotOutput::open(dst, {.overwrite = o.overwrite,
                                                                   .lock_wait = o.lock_wait,
                                                                   .purpose = "copy",
                                                                   .registry = o.dest_registry,
                                                                   .copied_from = src});
  // An encrypted snapshot is copied sealed, its MACs and members' sealed keys with it: they
  // stay valid, since names, positions and bytes are the same.
  ArchiveWriter& writer = out->start(
    ArchiveWriter::ManifestText{reader->manifest_text(), nullptr, reader->carried_manifest_attrs()});
  std::vector<std::byte> buf(1 << 20);
  uint64_t members = 0;
  ProgressLine bar(o.progress, "copying", 0);
  while (auto name = reader->next_if("")) {
    const ArchiveEntry& e = reader->open_entry();
    auto attr = [&](const char* key) {
      auto it = e.attrs.find(key);
      return it == e.attrs.end() ? std::string() : it->second;
    };
    if (attr(k_sha256_attr).empty()) {
      throw Error(reader->what() + " is damaged: member " + *name + " has no SHA-256 in its header",
                  ExitCode::archive_invalid);
    }
    // Streamed, the member is checked by the reader (stream_member) before the next one
    // begins, and the output publishes nothing before the copy completes: not hashed twice.
    writer.begin_member(*name, e.size, attr(k_sha256_attr), StreamCheck::source, attr(k_raw_hash_attr),
                        ArchiveReader::carried(e.attrs));
    reader->stream_member([&](const ArchiveReader::Source& source) {
      while (size_t n = source(buf)) {
        writer.write_member(std::span(buf).first(n));
        bar.update(writer.bytes_written());
      }
    });
    ++members;
  }
  if (reader->next()) { // nothing may be left: next_if() stops only at index.json
    throw Error(reader->what() + ": unexpected member order", ExitCode::archive_invalid);
  }
  Json extra = reader->index();
  for (const char* k : {"format", "format_version", "manifest_sha256", "members"}) {
    extra.erase(k);
  }
  // A signature and an encrypted snapshot's MAC stay valid: index.json is written again with
  // the same bytes.
  std::string signature = reader->index_signature();
  TarAttrs carried = reader->carried_index_attrs();
  writer.finish(
    extra,
    signature.empty() && carried.empty() ? ArchiveWriter::IndexSigner{} : [&](const std::string& text) {
      if (text != reader->index_text()) {
        throw Error("cannot copy the signature or MAC of " + reader->what() +
                    ": its index.json would not be the same bytes");
      }
      return signature;
    },
    carried);
  out->commit();
  Json r = out->describe();
  r["source"] = reader->what();
  r["members"] = members + 2;
  r["bytes"] = writer.bytes_written();
  return r;
}

Json list_snapshots(const std::string& text, const RegistryOptions& registry) {
  Reference ref = repository_reference(text, true);
  std::string tag = ref.tag;
  std::vector<OciSnapshot> all;
  if (ref.kind == Reference::Kind::registry) {
    Registry r(ref.host, ref.repo, registry);
    all = ref.digest.empty() ? read_snapshots(r, Missing::error)
                             : std::vector<OciSnapshot>{find_snapshot(r, "", ref.digest)};
  } else {
    all = read_snapshots(OciLayout(ref.path, OciLayout::Create::no));
  }
  std::map<std::string, unsigned> users; // blob -> snapshots that need it
  std::map<std::string, uint64_t> sizes;
  for (const auto& s : all) {
    std::set<std::string> mine;
    for (const auto& d : blobs_of(s)) {
      mine.insert(d);
    }
    for (const auto& d : mine) {
      ++users[d];
    }
    sizes[s.manifest.digest] = s.manifest.size;
    sizes[s.config.digest] = s.config.size;
    for (const auto& l : s.layers) {
      sizes[l.digest] = l.size;
    }
  }
  std::stable_sort(all.begin(), all.end(),
                   [](const auto& a, const auto& b) { return a.created() < b.created(); });
  Json out = Json::array();
  for (const auto& s : all) {
    if (!tag.empty() && s.tag != tag) {
      continue;
    }
    uint64_t unique = 0;
    std::vector<std::string> blobs = blobs_of(s);
    std::set<std::string> mine(blobs.begin(), blobs.end());
    for (const auto& d : mine) {
      unique += users[d] == 1 ? sizes[d] : 0;
    }
    out.push_back({{"tag", s.tag},
                   {"digest", s.manifest.digest},
                   {"created", s.created()},
                   {"host", annotation(s, "io.kata-snapshot.host")},
                   {"sandbox", annotation(s, "io.kata-snapshot.sandbox")},
                   {"mode", annotation(s, "io.kata-snapshot.mode")},
                   {"labels", labels_of(s)},
                   {"size", s.size()},
                   {"unique_size", unique}});
  }
  return out;
}

namespace {

// What a keep POLICY decides for the snapshots ALL.
struct Pruning {
  Json kept = Json::array();
  Json removed = Json::array();
  std::set<std::pair<std::string, std::string>> remove; // (digest, tag): a manifest may have several tags
  std::set<std::string> kept_digests;

  Json result(bool dry_run) const { return {{"kept", kept}, {"removed", removed}, {"dry_run", dry_run}}; }
};

Pruning decide(const std::vector<OciSnapshot>& all, const KeepPolicy& policy) {
  std::vector<RetentionItem> items;
  for (const auto& s : all) {
    std::map<std::string, std::string> labels;
    const Json j = labels_of(s);
    for (auto it = j.begin(); it != j.end(); ++it) {
      labels[it.key()] = it->get<std::string>();
    }
    items.push_back({s.tag, s.created(), labels});
  }
  std::vector<RetentionDecision> decisions = apply_policy(items, policy);
  Pruning p;
  for (size_t i = 0; i < all.size(); ++i) {
    Json j = {{"tag", all[i].tag}, {"digest", all[i].manifest.digest}, {"created", all[i].created()}};
    if (decisions[i].keep) {
      j["reasons"] = decisions[i].reasons;
      p.kept.push_back(j);
      p.kept_digests.insert(all[i].manifest.digest);
    } else {
      p.removed.push_back(j);
      p.remove.insert({all[i].manifest.digest, all[i].tag});
    }
  }
  return p;
}

// A registry removes a manifest by digest, with every tag of it: one still kept under
// another tag stays. Its blobs go with the registry's own garbage collection.
void prune_registry(Registry& registry, const Pruning& p) {
  std::set<std::string> done;
  for (const auto& [digest, tag] : p.remove) {
    if (!p.kept_digests.contains(digest) && done.insert(digest).second) {
      registry.delete_manifest(digest);
    }
  }
}

} // namespace

Json prune_snapshots(const std::string& text, const KeepPolicy& policy, const RepoOptions& o) {
  Reference ref = repository_reference(text, false);
  if (policy.empty()) {
    throw Error("no keep rule given: prune would remove every snapshot", ExitCode::usage,
                "pass --keep-last N, --keep-daily N, ... (see kata-snapshot(1), prune)");
  }
  if (ref.kind == Reference::Kind::registry) {
    Registry registry(ref.host, ref.repo, o.registry);
    Pruning p = decide(read_snapshots(registry, Missing::error), policy);
    if (!o.dry_run) {
      prune_registry(registry, p);
    }
    return p.result(o.dry_run);
  }
  OciLayout layout(ref.path, OciLayout::Create::no);
  FileLock lock = lock_exclusive(layout, "prune", o);
  note_taken_over(lock);
  Pruning p = decide(read_snapshots(layout), policy);
  if (!o.dry_run && !p.remove.empty()) {
    layout.update_index([&](Json& index) {
      Json left = Json::array();
      for (const auto& j : index["manifests"]) {
        std::string tag = json_string(json_object(j, "annotations"), k_oci_ref_name);
        if (!p.remove.contains({json_string(j, "digest"), tag})) {
          left.push_back(j);
        }
      }
      index["manifests"] = left;
    });
  }
  return p.result(o.dry_run);
}

namespace {

// How check reaches a repository's blobs: the stored size (nullopt: missing), the whole
// blob read and checked against its digest, and its bytes streamed unchecked.
struct BlobAccess {
  std::function<std::optional<uint64_t>(const Descriptor&)> size;
  std::function<Bytes(const Descriptor&, uint64_t max)> read;
  std::function<void(const Descriptor&, const std::function<void(std::span<const std::byte>)>&)> stream;
};

// What is wrong with blob D, or "" when nothing is. READ_DATA: its bytes too.
std::string blob_problem(const Descriptor& d, bool read_data, const BlobAccess& access) {
  std::optional<uint64_t> size = access.size(d);
  if (!size) {
    return "missing";
  }
  if (*size != d.size) {
    return "is " + std::to_string(*size) + " bytes, not " + std::to_string(d.size);
  }
  if (!read_data) {
    return "";
  }
  try {
    // A sealed chunk (an encrypted snapshot's) cannot be decompressed here: its hash only.
    if (d.media_type == member_media_type("vmstate/000000.zst") && d.annotation(k_key_annotation).empty()) {
      Bytes frame = access.read(d, 256u << 20);
      Bytes raw;
      zstd_decompress(frame, 256u << 20, raw);
      // The lookup key a later save trusts: BLAKE3, or SHA-256 from versions before it.
      using Hash = std::string (*)(std::span<const std::byte>);
      for (auto [name, hash] : {std::pair<const char*, Hash>{k_raw_annotation, blake3_hex},
                                std::pair<const char*, Hash>{k_raw_sha256_annotation, sha256_hex}}) {
        std::string want = d.annotation(name);
        if (!want.empty() && hash(raw) != want) {
          return "its data does not match its " + std::string(name) + " annotation";
        }
      }
      return "";
    }
    Sha256 hash;
    access.stream(d, [&](std::span<const std::byte> data) { hash.update(data); });
    return sha256_digest(hash.hex_digest()) != d.digest ? "does not match its digest (corrupted)" : "";
  } catch (const Error& e) {
    return e.what();
  }
}

// The snapshots a check covers, and the blobs they need.
struct Checked {
  std::map<std::string, std::vector<std::string>> needed_by; // blob -> snapshots
  std::map<std::string, Descriptor> blobs;
  Json problems = Json::array();
  unsigned snapshots = 0;

  // Reads the snapshot NAME with READ; a failure is a problem of blob DIGEST.
  void add(const std::string& name, const std::string& digest, const std::function<OciSnapshot()>& read) {
    ++snapshots;
    try {
      OciSnapshot s = read();
      blobs.emplace(s.config.digest, s.config);
      needed_by[s.config.digest].push_back(name);
      for (const auto& l : s.layers) {
        blobs.emplace(l.digest, l);
        needed_by[l.digest].push_back(name);
      }
    } catch (const Error& e) {
      problems.push_back({{"blob", digest}, {"problem", e.what()}, {"needed_by", {name}}});
    }
  }
  Json finish(const std::string& repository, bool read_data, const BlobAccess& access) {
    for (const auto& [digest, d] : blobs) {
      if (std::string problem = blob_problem(d, read_data, access); !problem.empty()) {
        problems.push_back({{"blob", digest}, {"problem", problem}, {"needed_by", needed_by[digest]}});
      }
    }
    return {{"ok", problems.empty()}, {"repository", repository}, {"snapshots", snapshots},
            {"blobs", blobs.size()},  {"read_data", read_data},   {"problems", problems}};
  }
};

std::vector<std::string> read_tags(Registry& registry) {
  std::optional<std::vector<std::string>> tags = registry.tags();
  if (!tags) {
    throw Error(registry.name() + " does not exist", ExitCode::registry_not_found);
  }
  return *tags;
}

Json check_registry(const Reference& ref, bool read_data, const RegistryOptions& o) {
  Registry registry(ref.host, ref.repo, o);
  Checked c;
  std::vector<std::string> refs = !ref.digest.empty() ? std::vector<std::string>{ref.digest}
                                  : !ref.tag.empty()  ? std::vector<std::string>{ref.tag}
                                                      : read_tags(registry);
  for (const auto& r : refs) {
    c.add(r, r, [&] {
      std::optional<Registry::Manifest> m = registry.get_manifest(r);
      if (!m) {
        throw Error("its manifest is missing");
      }
      return parse_snapshot(m->descriptor, m->data, registry.name() + ":" + r);
    });
  }
  BlobAccess access{
    .size = [&](const Descriptor& d) { return registry.blob_size(d.digest); },
    .read = [&](const Descriptor& d, uint64_t max) { return registry.read_blob(d, max, d.digest); },
    .stream =
      [&](const Descriptor& d, const std::function<void(std::span<const std::byte>)>& sink) {
        if (d.size > 0) {
          registry.read_blob_range(d, 0, d.size, sink);
        }
      }};
  return c.finish(registry.name(), read_data, access);
}

} // namespace

Json check_repository(const std::string& text, bool read_data, const RegistryOptions& registry) {
  Reference ref = repository_reference(text, true);
  if (ref.kind == Reference::Kind::registry) {
    return check_registry(ref, read_data, registry);
  }
  OciLayout layout(ref.path, OciLayout::Create::no);
  std::unique_ptr<FileLock> lock = layout.lock_for_reading("check"); // no gc meanwhile
  Checked c;
  const Json index = layout.read_index();
  for (const auto& j : index["manifests"]) {
    Descriptor d = Descriptor::parse(j, layout.dir() + "/index.json");
    std::string name = d.annotation(k_oci_ref_name).empty() ? d.digest : d.annotation(k_oci_ref_name);
    if (ref.tag.empty() || d.annotation(k_oci_ref_name) == ref.tag) {
      c.add(name, d.digest, [&] { return read_snapshot(layout, d); });
    }
  }
  std::vector<std::byte> buf(1 << 20);
  BlobAccess access{
    .size = [&](const Descriptor& d) { return layout.blob_size(d.digest); },
    .read = [&](const Descriptor& d, uint64_t max) { return layout.read_blob(d, max, d.digest); },
    .stream =
      [&](const Descriptor& d, const std::function<void(std::span<const std::byte>)>& sink) {
        Fd f = open_file(layout.blob_path(d.digest), O_RDONLY | O_NOFOLLOW);
        while (size_t n = read_full(f.get(), buf, d.digest)) {
          sink(std::span(buf).first(n));
        }
      }};
  return c.finish(layout.dir(), read_data, access);
}

Json gc_repository(const std::string& text, const RepoOptions& o) {
  Reference ref = repository_reference(text, false);
  if (ref.kind == Reference::Kind::registry) {
    throw Error("gc works on oci: repositories only: a registry removes unreferenced blobs itself",
                ExitCode::usage,
                "run the registry's own garbage collection (distribution: registry garbage-collect CONFIG)");
  }
  OciLayout layout(ref.path, OciLayout::Create::no);
  FileLock lock = lock_exclusive(layout, "gc", o);
  note_taken_over(lock);
  std::set<std::string> keep = referenced_blobs(layout);
  uint64_t freed = 0;
  Json removed = Json::array();
  for (const auto& name : layout.blob_files()) {
    bool temp = name.starts_with(".");
    if (!temp && keep.contains("sha256:" + name)) {
      continue;
    }
    std::string path = layout.dir() + "/blobs/sha256/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      continue;
    }
    if (!o.dry_run && ::unlink(path.c_str()) != 0) {
      throw_errno("failed to remove " + path);
    }
    freed += static_cast<uint64_t>(st.st_size);
    removed.push_back(temp ? name : "sha256:" + name);
  }
  if (!o.dry_run) { // staging files of saves that did not finish (none runs: the lock is ours)
    for (const auto& name : list_dir(layout.temp_dir())) {
      ::unlink((layout.temp_dir() + "/" + name).c_str());
    }
    remove_stale_chunk_caches(layout, keep); // of the snapshots pruned since
  }
  return {{"removed", removed}, {"bytes_freed", freed}, {"dry_run", o.dry_run}, {"referenced", keep.size()}};
}

} // namespace ks
