#include "storage/store/repository.hpp"

#include "storage/store/oci_layout.hpp"
#include "storage/store/oci_snapshot.hpp"
#include "storage/store/store.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/file_lock.hpp"

#include <fcntl.h>
#include <map>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace ks {

namespace {

OciLayout open_repository(const std::string& text, bool tag_allowed, std::string* tag = nullptr) {
  Reference ref = parse_reference(text);
  if (ref.kind != Reference::Kind::oci) {
    throw Error(text + " is not a repository", ExitCode::usage, "name one as oci:DIR");
  }
  if (!ref.tag.empty() && !tag_allowed) {
    throw Error(text + " names a snapshot; this command takes the whole repository", ExitCode::usage,
                "write oci:" + ref.path);
  }
  if (tag) {
    *tag = ref.tag;
  }
  return OciLayout(ref.path, OciLayout::Create::no);
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
  std::unique_ptr<ArchiveReader> reader = open_snapshot(src);
  std::unique_ptr<SnapshotOutput> out =
    SnapshotOutput::open(dst, {.overwrite = o.overwrite, .lock_wait = o.lock_wait, .purpose = "copy"});
  // An encrypted snapshot is copied sealed, its MACs and members' sealed keys with it: they
  // stay valid, since names, positions and bytes are the same.
  ArchiveWriter& writer = out->start(
    ArchiveWriter::ManifestText{reader->manifest_text(), nullptr, reader->carried_manifest_attrs()});
  std::vector<std::byte> buf(1 << 20);
  uint64_t members = 0;
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
    writer.begin_member(*name, e.size, attr(k_sha256_attr), attr(k_raw_sha256_attr),
                        ArchiveReader::carried(e.attrs));
    reader->stream_member([&](const ArchiveReader::Source& source) {
      while (size_t n = source(buf)) {
        writer.write_member(std::span(buf).first(n));
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

Json list_snapshots(const std::string& ref) {
  std::string tag;
  OciLayout layout = open_repository(ref, true, &tag);
  std::vector<OciSnapshot> all = read_snapshots(layout);
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

Json prune_snapshots(const std::string& ref, const KeepPolicy& policy, const RepoOptions& o) {
  OciLayout layout = open_repository(ref, false);
  if (policy.empty()) {
    throw Error("no keep rule given: prune would remove every snapshot", ExitCode::usage,
                "pass --keep-last N, --keep-daily N, ... (see kata-snapshot(1), prune)");
  }
  FileLock lock = lock_exclusive(layout, "prune", o);
  note_taken_over(lock);
  std::vector<OciSnapshot> all = read_snapshots(layout);
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
  Json kept = Json::array();
  Json removed = Json::array();
  std::set<std::pair<std::string, std::string>> remove; // (digest, tag): a manifest may have several tags
  for (size_t i = 0; i < all.size(); ++i) {
    Json j = {{"tag", all[i].tag}, {"digest", all[i].manifest.digest}, {"created", all[i].created()}};
    if (decisions[i].keep) {
      j["reasons"] = decisions[i].reasons;
      kept.push_back(j);
    } else {
      removed.push_back(j);
      remove.insert({all[i].manifest.digest, all[i].tag});
    }
  }
  if (!o.dry_run && !remove.empty()) {
    layout.update_index([&](Json& index) {
      Json left = Json::array();
      for (const auto& j : index["manifests"]) {
        std::string tag = j.value("annotations", Json::object()).value(k_oci_ref_name, "");
        if (!remove.contains({j.value("digest", ""), tag})) {
          left.push_back(j);
        }
      }
      index["manifests"] = left;
    });
  }
  return {{"kept", kept}, {"removed", removed}, {"dry_run", o.dry_run}};
}

Json check_repository(const std::string& ref, bool read_data) {
  std::string tag;
  OciLayout layout = open_repository(ref, true, &tag);
  std::unique_ptr<FileLock> lock = layout.lock_for_reading("check"); // no gc meanwhile
  std::map<std::string, std::vector<std::string>> needed_by;         // blob -> snapshots
  std::map<std::string, Descriptor> blobs;
  Json problems = Json::array();
  unsigned snapshots = 0;
  const Json index = layout.read_index();
  for (const auto& j : index["manifests"]) {
    Descriptor d = Descriptor::parse(j, layout.dir() + "/index.json");
    std::string name = d.annotation(k_oci_ref_name).empty() ? d.digest : d.annotation(k_oci_ref_name);
    if (!tag.empty() && d.annotation(k_oci_ref_name) != tag) {
      continue;
    }
    ++snapshots;
    try {
      OciSnapshot s = read_snapshot(layout, d);
      blobs.emplace(s.config.digest, s.config);
      needed_by[s.config.digest].push_back(name);
      for (const auto& l : s.layers) {
        blobs.emplace(l.digest, l);
        needed_by[l.digest].push_back(name);
      }
    } catch (const Error& e) {
      problems.push_back({{"blob", d.digest}, {"problem", e.what()}, {"needed_by", {name}}});
    }
  }
  std::vector<std::byte> buf(1 << 20);
  for (const auto& [digest, d] : blobs) {
    std::string problem;
    std::optional<uint64_t> size = layout.blob_size(digest);
    if (!size) {
      problem = "missing";
    } else if (*size != d.size) {
      problem = "is " + std::to_string(*size) + " bytes, not " + std::to_string(d.size);
    } else if (read_data) {
      try {
        // A sealed chunk (an encrypted snapshot's) cannot be decompressed here: its hash only.
        if (d.media_type == member_media_type("vmstate/000000.zst") &&
            d.annotation(k_key_annotation).empty()) {
          Bytes frame = layout.read_blob(d, 256u << 20, digest);
          Bytes raw;
          zstd_decompress(frame, 256u << 20, raw);
          std::string want = d.annotation(k_raw_annotation);
          if (!want.empty() && sha256_hex(raw) != want) {
            problem = "its data does not match its " + std::string(k_raw_annotation) + " annotation";
          }
        } else {
          Fd f = open_file(layout.blob_path(digest), O_RDONLY | O_NOFOLLOW);
          Sha256 hash;
          while (size_t n = read_full(f.get(), buf, digest)) {
            hash.update(std::span(buf).first(n));
          }
          if (sha256_digest(hash.hex_digest()) != digest) {
            problem = "does not match its digest (corrupted)";
          }
        }
      } catch (const Error& e) {
        problem = e.what();
      }
    }
    if (!problem.empty()) {
      problems.push_back({{"blob", digest}, {"problem", problem}, {"needed_by", needed_by[digest]}});
    }
  }
  return {{"ok", problems.empty()}, {"repository", layout.dir()}, {"snapshots", snapshots},
          {"blobs", blobs.size()},  {"read_data", read_data},     {"problems", problems}};
}

Json gc_repository(const std::string& ref, const RepoOptions& o) {
  OciLayout layout = open_repository(ref, false);
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
  }
  return {{"removed", removed}, {"bytes_freed", freed}, {"dry_run", o.dry_run}, {"referenced", keep.size()}};
}

} // namespace ks
