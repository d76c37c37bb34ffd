#include "storage/store/store.hpp"

#include "storage/store/oci_layout.hpp"
#include "storage/store/oci_snapshot.hpp"
#include "storage/store/registry_snapshot.hpp"
#include "storage/tar.hpp"
#include "util/atomic_file.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/file_lock.hpp"
#include "util/json_fields.hpp"
#include "util/sha256.hpp"
#include "util/strings.hpp"

#include <exception>
#include <fcntl.h>
#include <future>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace ks {

namespace {

std::optional<uint64_t> free_space(int fd) {
  struct statvfs fs {};
  if (::fstatvfs(fd, &fs) != 0) {
    return std::nullopt;
  }
  return static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
}

// Where large temporary files go when the destination has no place of its own.
std::string default_temp_dir() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp ? tmp : "/var/tmp";
}

// What a save or copy into a repository reports: where, the tag, and once it is done the
// manifest's digest and the blob bytes it wrote.
Json tagged_result(const std::string& name, const std::string& tag, const std::string& digest,
                   uint64_t written) {
  Json j = {{"output", name}, {"tag", tag}};
  if (!digest.empty()) {
    j["digest"] = digest;
    j["blob_bytes_written"] = written;
  }
  return j;
}

// A tag from the time, which sorts as the snapshots were taken: 20261127T020000Z.
std::string time_tag() {
  return utc_now_as("%Y%m%dT%H%M%SZ");
}

// A .ksnap file under a temp name until commit(), or stdout.
class FileOutput : public SnapshotOutput {
public:
  FileOutput(const Reference& ref, const OutputOptions& o) : m_ref(ref) {
    if (ref.kind == Reference::Kind::pipe) {
      if (::isatty(STDOUT_FILENO)) {
        throw Error("refusing to write a binary archive to a terminal", ExitCode::usage,
                    "redirect stdout, or pass -o FILE");
      }
      return;
    }
    struct stat st {};
    if (::stat(ref.path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
      if (S_ISDIR(st.st_mode)) {
        throw Error(ref.path + " is a directory", ExitCode::usage, "name a file, or oci:" + ref.path);
      }
      // A device or a named pipe (/dev/null, a FIFO): written straight through, like stdout.
      // A temp file renamed over it would replace the device with a file.
      m_direct = open_file(ref.path, O_WRONLY | O_CLOEXEC);
      return;
    }
    m_file.emplace(ref.path, o.overwrite ? AtomicFile::Overwrite::yes : AtomicFile::Overwrite::no);
  }
  ArchiveWriter& start(const ArchiveWriter::ManifestText& manifest) override {
    int fd = m_file ? m_file->fd() : m_direct ? m_direct.get() : STDOUT_FILENO;
    auto tar = std::make_unique<TarWriter>(fd, name());
    // A container checkpoint is also a checkpoint archive checkpointctl reads, which wants
    // the checkpoint/ directory's own entry.
    tar->write_directories(manifest_kind(Json::parse(manifest.text, nullptr, false)) == k_kind_container);
    m_writer = std::make_unique<ArchiveWriter>(std::move(tar), manifest);
    return *m_writer;
  }
  void commit() override {
    if (m_file) {
      m_file->commit();
    }
  }
  void discard() noexcept override {
    if (m_file) {
      m_file->discard();
    }
  }
  std::string temp_dir() const override {
    if (m_file) {
      return dir_name(m_ref.path);
    }
    return default_temp_dir();
  }
  std::vector<std::string> temp_paths() const override {
    return m_file ? std::vector<std::string>{m_file->temp_path()} : std::vector<std::string>{};
  }
  std::optional<uint64_t> free_bytes() const override {
    return m_file ? free_space(m_file->fd()) : std::nullopt;
  }
  std::string name() const override { return m_ref.kind == Reference::Kind::pipe ? "stdout" : m_ref.path; }
  Json describe() const override {
    return {{"output", m_ref.kind == Reference::Kind::pipe ? "-" : m_ref.path}};
  }
  bool deduplicates() const override { return false; }

private:
  Reference m_ref;
  std::optional<AtomicFile> m_file; // a regular file, under a temp name until commit()
  Fd m_direct;                      // a device or a FIFO
  std::unique_ptr<ArchiveWriter> m_writer;
};

// The chunks a repository or registry already holds (a save looks each new chunk up there),
// read on a thread of their own while the save gets ready: get() waits and rethrows the
// failure (every time it is asked), take() hands the index over once.
class KnownChunks {
public:
  template <typename Read>
  void start(Read read) {
    m_future = std::async(std::launch::async, std::move(read));
  }
  const RawIndex& get() {
    if (!m_index && !m_failure) {
      try {
        m_index = m_future.get();
      } catch (...) {
        m_failure = std::current_exception();
      }
    }
    if (m_failure) {
      std::rethrow_exception(m_failure);
    }
    return *m_index;
  }
  RawIndex take() {
    get();
    return std::move(*m_index);
  }

private:
  std::future<RawIndex> m_future;
  std::optional<RawIndex> m_index;
  std::exception_ptr m_failure;
};

// A snapshot into an OCI image layout, under a shared repository lock: blobs first (known
// chunks skipped), the manifest and its tag in index.json last.
class OciOutput : public SnapshotOutput {
public:
  OciOutput(const Reference& ref, const OutputOptions& o)
    : m_ref(ref), m_layout(ref.path, OciLayout::Create::yes), m_overwrite(o.overwrite),
      m_lock(m_layout.lock_path(),
             {.mode = LockMode::shared,
              .wait = o.lock_wait,
              .purpose = o.purpose,
              .what = "the repository " + ref.path,
              .hint = "a prune or gc is running; wait for it, or pass a longer --lock-wait"}) {
    m_tag = ref.tag.empty() ? time_tag() : ref.tag;
    if (!o.overwrite) {
      const Json index = m_layout.read_index();
      for (const auto& j : index["manifests"]) {
        if (j.is_object() && j.value("annotations", Json::object()).value(k_oci_ref_name, "") == m_tag) {
          throw Error(ref.with_tag(m_tag) + " already exists", ExitCode::failed,
                      "pass --force to replace it, or choose another tag");
        }
      }
    }
    make_dirs(m_layout.temp_dir());
    // The chunks the repository holds, read while the save gets ready, not while the VM is
    // paused (a manifest per snapshot: 10 ms or so each for a 1 GiB guest). The shared lock
    // keeps gc from removing any of them until the save is over.
    m_known.start([layout = m_layout] { return build_raw_index(layout); });
  }
  void prepare() override { m_known.get(); }
  ArchiveWriter& start(const ArchiveWriter::ManifestText& manifest) override {
    auto sink = std::make_unique<OciSink>(m_layout, m_tag, m_overwrite, m_known.take());
    m_sink = sink.get();
    m_writer = std::make_unique<ArchiveWriter>(std::move(sink), manifest);
    return *m_writer;
  }
  void commit() override {} // the writer's finish() tagged the manifest
  // A failed save's temp blobs go with its writer (BlobBatch); a killed one's with `gc`.
  void discard() noexcept override {}
  std::string temp_dir() const override { return m_layout.temp_dir(); }
  std::vector<std::string> temp_paths() const override { return {}; }
  std::optional<uint64_t> free_bytes() const override {
    Fd dir = open_file(m_layout.dir(), O_RDONLY | O_DIRECTORY);
    return free_space(dir.get());
  }
  std::string name() const override { return m_ref.with_tag(m_tag); }
  Json describe() const override {
    return m_sink ? tagged_result(name(), m_tag, m_sink->digest(), m_sink->blob_bytes_written())
                  : tagged_result(name(), m_tag, "", 0);
  }
  bool deduplicates() const override { return true; }

private:
  Reference m_ref;
  OciLayout m_layout;
  bool m_overwrite;
  FileLock m_lock;
  std::string m_tag;
  KnownChunks m_known;
  OciSink* m_sink = nullptr;
  std::unique_ptr<ArchiveWriter> m_writer;
};

// A snapshot pushed to a registry as it is written: blobs uploaded as they come (known
// chunks skipped), the manifest put under its tag last.
class RegistryOutput : public SnapshotOutput {
public:
  RegistryOutput(const Reference& ref, const OutputOptions& o)
    : m_ref(ref), m_options(o.registry), m_registry(ref.host, ref.repo, o.registry) {
    if (!ref.digest.empty()) {
      throw Error(ref.text + ": a snapshot is saved under a tag, not a digest", ExitCode::usage,
                  "write docker://" + ref.path + ":TAG");
    }
    m_tag = ref.tag.empty() ? time_tag() : ref.tag;
    if (!o.copied_from.empty()) {
      Reference src = parse_reference(o.copied_from);
      if (src.kind == Reference::Kind::registry && src.host == ref.host && src.repo != ref.repo) {
        m_mount_from = src.repo; // a copy within the registry: blobs mounted, not uploaded
      }
    }
    // Also the check that the registry answers and takes our credentials, before any pause.
    if (!o.overwrite && m_registry.get_manifest(m_tag)) {
      throw Error(ref.with_tag(m_tag) + " already exists", ExitCode::failed,
                  "pass --force to replace it, or choose another tag");
    }
    // The chunks the registry holds (every tag's manifest, a request each), fetched while the
    // save gets ready, not while the VM is paused; on a connection of its own.
    m_known.start([registry = Registry(ref.host, ref.repo, o.registry)]() mutable {
      return build_raw_index(read_snapshots(registry, Missing::empty),
                             [](const StoredMember&) { return true; });
    });
  }
  void prepare() override { m_known.get(); }
  ArchiveWriter& start(const ArchiveWriter::ManifestText& manifest) override {
    auto sink = std::make_unique<RegistrySink>(Registry(m_ref.host, m_ref.repo, m_options), m_options, m_tag,
                                               m_known.take(), m_mount_from);
    m_sink = sink.get();
    m_writer = std::make_unique<ArchiveWriter>(std::move(sink), manifest);
    return *m_writer;
  }
  void commit() override {}           // the writer's finish() put the manifest
  void discard() noexcept override {} // blobs without a manifest: the registry's gc removes them
  std::string temp_dir() const override { return default_temp_dir(); }
  std::vector<std::string> temp_paths() const override { return {}; }
  std::optional<uint64_t> free_bytes() const override { return std::nullopt; }
  std::string name() const override { return m_ref.with_tag(m_tag); }
  Json describe() const override {
    if (!m_sink) {
      return tagged_result(name(), m_tag, "", 0);
    }
    Json j = tagged_result(name(), m_tag, m_sink->digest(), m_sink->blob_bytes_written());
    j["blobs_mounted"] = m_sink->blobs_mounted();
    return j;
  }
  bool deduplicates() const override { return true; }

private:
  Reference m_ref;
  RegistryOptions m_options;
  Registry m_registry;
  std::string m_tag;
  std::string m_mount_from;
  KnownChunks m_known;
  RegistrySink* m_sink = nullptr;
  std::unique_ptr<ArchiveWriter> m_writer;
};

// The source of a registry snapshot REF names, and its name for messages.
std::unique_ptr<EntrySource> registry_source(const Reference& ref, const RegistryOptions& o,
                                             std::string* what) {
  Registry registry(ref.host, ref.repo, o);
  OciSnapshot snap = find_snapshot(registry, ref.tag, ref.digest);
  *what = ref.tag.empty() && ref.digest.empty() ? ref.with_tag(snap.tag) : ref.with_tag(ref.tag);
  return std::make_unique<RegistrySource>(std::move(registry), o, std::move(snap));
}

} // namespace

std::unique_ptr<ArchiveReader> open_snapshot(const std::string& text, const RegistryOptions& registry) {
  Reference ref = parse_reference(text);
  switch (ref.kind) {
  case Reference::Kind::registry: {
    std::string what;
    std::unique_ptr<EntrySource> source = registry_source(ref, registry, &what);
    return std::make_unique<ArchiveReader>(std::move(source), what);
  }
  case Reference::Kind::oci: {
    OciLayout layout(ref.path, OciLayout::Create::no);
    std::unique_ptr<FileLock> lock = layout.lock_for_reading("read " + text); // no gc meanwhile
    OciSnapshot snap = find_snapshot(layout, ref.tag);
    std::string what = ref.with_tag(snap.tag.empty() ? ref.tag : snap.tag);
    return std::make_unique<ArchiveReader>(
      std::make_unique<OciSource>(layout, std::move(snap), what, std::move(lock)), what);
  }
  case Reference::Kind::pipe:
    return std::make_unique<ArchiveReader>(Fd(::dup(STDIN_FILENO)), "the archive on stdin");
  default:
    break;
  }
  Fd file;
  try {
    file = open_file(ref.path, O_RDONLY | O_CLOEXEC);
  } catch (const Error& e) {
    throw Error(e.what(), ExitCode::archive_invalid);
  }
  return std::make_unique<ArchiveReader>(std::move(file), ref.path);
}

PeekedIndex peek_index(const std::string& text, const std::string& why, const RegistryOptions& registry) {
  Reference ref = parse_reference(text);
  std::unique_ptr<EntrySource> source;
  Fd file;
  if (ref.kind == Reference::Kind::pipe) {
    throw Error(why + " before QEMU starts, from the headers and index.json at the end of the archive, "
                      "and the archive on stdin cannot be read twice",
                ExitCode::usage, "load a file or a repository's snapshot");
  }
  if (ref.kind == Reference::Kind::oci) {
    OciLayout layout(ref.path, OciLayout::Create::no);
    std::unique_ptr<FileLock> lock = layout.lock_for_reading("read " + text);
    OciSnapshot snap = find_snapshot(layout, ref.tag);
    source = std::make_unique<OciSource>(layout, std::move(snap), text, std::move(lock));
  } else if (ref.kind == Reference::Kind::registry) {
    std::string what;
    source = registry_source(ref, registry, &what);
  } else {
    try {
      file = open_file(ref.path, O_RDONLY | O_CLOEXEC);
    } catch (const Error& e) {
      throw Error(e.what(), ExitCode::archive_invalid);
    }
    source = std::make_unique<TarReader>(file.get(), ref.path);
  }
  PeekedIndex p;
  ArchiveEntry e;
  while (source->next(e)) { // members' data is skipped (a seek in a file)
    if (p.entries.size() >= (1u << 24)) {
      throw Error(text + " is damaged: it holds implausibly many members", ExitCode::archive_invalid);
    }
    p.entries.push_back(e);
    if (e.name != k_index_member) {
      continue;
    }
    if (e.size > (64u << 20)) {
      throw Error(text + " is damaged: index.json is implausibly large", ExitCode::archive_invalid);
    }
    p.text.resize(e.size);
    size_t got = 0;
    while (got < e.size) {
      size_t n = source->read(std::as_writable_bytes(std::span(p.text)).subspan(got));
      if (n == 0) {
        throw Error(text + " is damaged: index.json is truncated", ExitCode::archive_invalid);
      }
      got += n;
    }
    auto sig = e.attrs.find(k_signature_attr);
    p.signature = sig == e.attrs.end() ? std::string() : sig->second;
    return p;
  }
  throw Error(text + " is damaged: index.json is missing (the archive is incomplete or truncated)",
              ExitCode::archive_invalid);
}

void check_sealed_headers(const PeekedIndex& peeked, const ArchiveReader& reader) {
  const Opener& opener = *reader.opener();
  auto damaged = [&](const std::string& why) {
    throw Error(reader.what() + " is damaged: " + why, ExitCode::archive_invalid);
  };
  auto attr = [](const ArchiveEntry& e, const char* key) {
    auto it = e.attrs.find(key);
    return it == e.attrs.end() ? std::string() : it->second;
  };
  const ArchiveEntry& index_entry = peeked.entries.back();
  opener.check_mac(k_index_member, attr(index_entry, k_mac_attr), peeked.text);
  Json index = Json::parse(peeked.text, nullptr, false);
  const Json& members = index.is_object() ? index.value("members", Json()) : Json();
  if (!members.is_array() || members.size() + 1 != peeked.entries.size()) {
    damaged("its members are not the ones index.json lists");
  }
  if (json_string(index, "manifest_sha256") != sha256_hex(reader.manifest_text())) {
    damaged("index.json is not the index of the manifest that was read (the snapshot changed meanwhile)");
  }
  for (size_t i = 0; i + 1 < peeked.entries.size(); ++i) {
    const ArchiveEntry& e = peeked.entries[i];
    const Json& m = members[i];
    std::string sha = attr(e, k_sha256_attr);
    if (!m.is_object() || json_string(m, "name") != e.name || json_unsigned(m, "size", 0) != e.size ||
        json_string(m, "sha256") != sha) {
      damaged("member " + e.name + " (position " + std::to_string(i) +
              ") is not the one index.json lists there");
    }
    if (i > 0) {
      opener.member_key(attr(e, k_member_key_attr), i, e.name, sha);
    }
  }
}

std::unique_ptr<SnapshotOutput> SnapshotOutput::open(const std::string& text, const OutputOptions& o) {
  Reference ref = parse_reference(text);
  if (ref.kind == Reference::Kind::oci) {
    return std::make_unique<OciOutput>(ref, o);
  }
  if (ref.kind == Reference::Kind::registry) {
    return std::make_unique<RegistryOutput>(ref, o);
  }
  return std::make_unique<FileOutput>(ref, o);
}

} // namespace ks
