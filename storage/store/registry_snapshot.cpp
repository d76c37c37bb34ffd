#include "storage/store/registry_snapshot.hpp"

#include "storage/manifest.hpp"
#include "util/error.hpp"
#include "util/json_fields.hpp"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

namespace ks {

namespace {

constexpr size_t k_upload_connections = 4;
constexpr size_t k_fetch_connections = 8;
constexpr uint64_t k_upload_queue_bytes = 32u << 20; // waiting blobs; more waits for the uploads
constexpr uint64_t k_piece_bytes = 8u << 20;         // a streamed upload's PATCH, a pull's GET
constexpr uint64_t k_prefetch_bytes = 48u << 20;     // blobs fetched ahead of a pull's reader

} // namespace

std::vector<OciSnapshot> read_snapshots(Registry& registry, Missing missing) {
  std::vector<OciSnapshot> out;
  std::optional<std::vector<std::string>> tags = registry.tags();
  if (!tags && missing == Missing::error) {
    throw Error(registry.name() + " does not exist", ExitCode::registry_not_found,
                "check the repository's name; a save creates it");
  }
  for (const auto& tag : tags.value_or(std::vector<std::string>{})) {
    std::optional<Registry::Manifest> m = registry.get_manifest(tag);
    if (!m || m->descriptor.media_type != k_oci_manifest_type) {
      continue; // deleted meanwhile, or an index: not ours
    }
    Json j =
      Json::parse(std::string(reinterpret_cast<const char*>(m->data.data()), m->data.size()), nullptr, false);
    if (json_string(j, "artifactType") != k_artifact_type) {
      continue; // another artifact in the same repository
    }
    out.push_back(parse_snapshot(m->descriptor, m->data, registry.name() + ":" + tag));
  }
  return out;
}

OciSnapshot find_snapshot(Registry& registry, const std::string& tag, const std::string& digest) {
  if (tag.empty() && digest.empty()) {
    std::vector<OciSnapshot> all = read_snapshots(registry, Missing::error);
    auto newest = std::max_element(all.begin(), all.end(), [](const OciSnapshot& a, const OciSnapshot& b) {
      return a.created() < b.created();
    });
    if (newest == all.end()) {
      throw Error(registry.name() + " holds no snapshot", ExitCode::registry_not_found);
    }
    return *newest;
  }
  std::string ref = digest.empty() ? tag : digest;
  std::string what = registry.name() + (digest.empty() ? ":" + tag : "@" + digest);
  std::optional<Registry::Manifest> m = registry.get_manifest(ref);
  if (!m) {
    throw Error(what + " does not exist", ExitCode::registry_not_found,
                "see the tags with: kata-snapshot list " + registry.name());
  }
  return parse_snapshot(m->descriptor, m->data, what);
}

// Uploads whole blobs on a few connections of their own. push() copies the blob into a
// queue bounded in bytes and waits while it is full; the first failure ends every upload and
// is thrown by the next push() or wait().
class UploadPool {
public:
  UploadPool(const Registry& like, const RegistryOptions& options) {
    for (size_t i = 0; i < k_upload_connections; ++i) {
      m_threads.emplace_back([this, r = Registry(like.host(), like.repo(), options)]() mutable { run(r); });
    }
  }
  ~UploadPool() {
    {
      std::lock_guard lock(m_mutex);
      m_stop = true;
    }
    m_work.notify_all();
    for (auto& t : m_threads) {
      t.join();
    }
  }
  UploadPool(const UploadPool&) = delete;
  UploadPool& operator=(const UploadPool&) = delete;

  void push(std::string digest, std::span<const std::byte> data) {
    std::unique_lock lock(m_mutex);
    m_space.wait(
      lock, [&] { return m_failure || m_queued == 0 || m_queued + data.size() <= k_upload_queue_bytes; });
    rethrow();
    m_queued += data.size();
    m_jobs.push_back({std::move(digest), bytes_of(data)});
    m_work.notify_one();
  }
  void wait() {
    std::unique_lock lock(m_mutex);
    m_space.wait(lock, [&] { return m_failure || (m_jobs.empty() && m_busy == 0); });
    rethrow();
  }
  uint64_t uploaded() const {
    std::lock_guard lock(m_mutex);
    return m_uploaded;
  }

private:
  struct Job {
    std::string digest;
    Bytes data;
  };

  void rethrow() {
    if (m_failure) {
      std::rethrow_exception(m_failure);
    }
  }

  void run(Registry& registry) {
    std::unique_lock lock(m_mutex);
    while (true) {
      m_work.wait(lock, [&] { return m_stop || m_failure || !m_jobs.empty(); });
      if (m_stop || m_failure) {
        return;
      }
      Job job = std::move(m_jobs.front());
      m_jobs.pop_front();
      ++m_busy;
      lock.unlock();
      std::exception_ptr failure;
      bool sent = false;
      try {
        if (registry.blob_size(job.digest) != job.data.size()) {
          registry.put_blob(job.digest, job.data);
          sent = true;
        }
      } catch (...) {
        failure = std::current_exception();
      }
      lock.lock();
      --m_busy;
      m_queued -= job.data.size();
      m_uploaded += sent ? job.data.size() : 0;
      if (failure && !m_failure) {
        m_failure = failure;
        m_work.notify_all();
      }
      m_space.notify_all();
    }
  }

  mutable std::mutex m_mutex;
  std::condition_variable m_work, m_space;
  std::deque<Job> m_jobs;
  uint64_t m_queued = 0;
  uint64_t m_uploaded = 0;
  size_t m_busy = 0;
  bool m_stop = false;
  std::exception_ptr m_failure;
  std::vector<std::thread> m_threads;
};

RegistrySink::RegistrySink(Registry registry, const RegistryOptions& options, std::string tag, RawIndex known,
                           std::string mount_from)
  : m_registry(std::move(registry)), m_tag(std::move(tag)), m_known(std::move(known)),
    m_mount_from(std::move(mount_from)), m_pool(std::make_unique<UploadPool>(m_registry, options)) {}

RegistrySink::~RegistrySink() = default;

uint64_t RegistrySink::blob_bytes_written() const {
  return m_pool->uploaded() + m_streamed_bytes;
}

void RegistrySink::add(const std::string& name, std::span<const std::byte> data, const TarAttrs& attrs) {
  KS_ASSERT(!m_open);
  auto sha = attrs.find(k_sha256_attr);
  Descriptor d = member_descriptor(name, sha == attrs.end() ? "" : sha->second, data.size(), attrs);
  if (!m_config) {
    KS_ASSERT(name == k_manifest_member);
    m_manifest_text.assign(reinterpret_cast<const char*>(data.data()), data.size());
    m_config = d;
  } else {
    m_layers.push_back(d);
  }
  if (m_sent.insert(d.digest).second) {
    m_pool->push(d.digest, data);
  }
}

void RegistrySink::begin(const std::string& name, uint64_t size, const TarAttrs& attrs, StreamCheck check) {
  KS_ASSERT(m_config && !m_open);
  m_check_open = check == StreamCheck::sink;
  auto sha = attrs.find(k_sha256_attr);
  m_open = member_descriptor(name, sha == attrs.end() ? "" : sha->second, size, attrs);
  m_open_left = size;
  m_hash = Sha256();
  if (m_sent.insert(m_open->digest).second && m_registry.blob_size(m_open->digest) != size) {
    if (!m_mount_from.empty() && m_registry.mount_blob(m_open->digest, m_mount_from)) {
      ++m_mounted; // its bytes are still read and checked as they stream by
    } else {
      m_upload.emplace(m_registry);
    }
  }
  if (size == 0) {
    finish_open();
  }
}

void RegistrySink::write(std::span<const std::byte> data) {
  KS_ASSERT(m_open && data.size() <= m_open_left);
  if (m_check_open) {
    m_hash.update(data);
  }
  m_open_left -= data.size();
  if (m_upload) {
    append(m_piece, data);
    if (m_piece.size() >= k_piece_bytes && m_open_left > 0) {
      flush_piece();
    }
  }
  if (m_open_left == 0) {
    finish_open();
  }
}

void RegistrySink::flush_piece() {
  m_upload->append(m_piece);
  m_streamed_bytes += m_piece.size();
  m_piece.clear();
}

// A streamed member is checked against its digest here (unless its source does), whether or
// not it was uploaded: the registry checks what it receives, but not what it already had.
void RegistrySink::finish_open() {
  if (m_check_open && sha256_digest(m_hash.hex_digest()) != m_open->digest) {
    throw Error("member " + m_open->annotation(k_title_annotation) + " did not have its SHA-256 " +
                  m_open->digest + " when it was written",
                ExitCode::archive_invalid);
  }
  if (m_upload) {
    m_upload->finish(m_open->digest, m_piece);
    m_streamed_bytes += m_piece.size();
    m_piece.clear();
    m_upload.reset();
  }
  m_layers.push_back(*m_open);
  m_open.reset();
}

std::optional<StoredMember> RegistrySink::find_raw(const std::string& raw_hash) const {
  auto it = m_known.find(raw_hash);
  return it == m_known.end() ? std::nullopt : std::optional(it->second);
}

void RegistrySink::add_stored(const std::string& name, const StoredMember& stored, const TarAttrs& attrs) {
  KS_ASSERT(m_config && !m_open);
  m_layers.push_back(member_descriptor(name, stored.sha256, stored.size, attrs));
}

void RegistrySink::close() {
  KS_ASSERT(m_config && !m_open);
  std::string text = image_manifest_text(*m_config, m_layers, m_manifest_text);
  m_pool->wait(); // every blob it names is there before the manifest is put
  m_digest = m_registry.put_manifest(m_tag, text);
}

// Fetches the small blobs of a snapshot ahead of their reader, in archive order, on a few
// connections, with at most k_prefetch_bytes fetched and not taken yet (or in flight). A
// blob the snapshot names several times (a chunk of zero pages: most chunks of an idle VM)
// is fetched once and kept until its last use.
class Prefetcher {
public:
  Prefetcher(const Registry& like, const RegistryOptions& options, std::vector<Descriptor> blobs, size_t from)
    : m_blobs(std::move(blobs)), m_next(from), m_taken(from) {
    for (size_t i = from; i < m_blobs.size(); ++i) {
      if (wanted(m_blobs[i])) {
        ++m_uses[m_blobs[i].digest];
      }
    }
    for (size_t i = 0; i < k_fetch_connections; ++i) {
      m_threads.emplace_back([this, r = Registry(like.host(), like.repo(), options)]() mutable { run(r); });
    }
  }
  ~Prefetcher() {
    {
      std::lock_guard lock(m_mutex);
      m_stop = true;
    }
    m_changed.notify_all();
    for (auto& t : m_threads) {
      t.join();
    }
  }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  static bool wanted(const Descriptor& d) { return d.size <= k_piece_bytes; }

  // Blob I (wanted), once fetched; the blobs before it that were not taken are skipped.
  // Throws a fetch's failure.
  Bytes take(size_t i) {
    std::unique_lock lock(m_mutex);
    for (; m_taken < i; ++m_taken) {
      used(m_blobs[m_taken]);
    }
    m_changed.notify_all();
    const Descriptor& d = m_blobs[i];
    m_changed.wait(lock, [&] { return m_failure || m_fetched.contains(d.digest); });
    if (m_failure) {
      std::rethrow_exception(m_failure);
    }
    Bytes data = m_uses[d.digest] == 1 ? std::move(m_fetched[d.digest]) : m_fetched[d.digest];
    used(d);
    m_taken = i + 1;
    m_changed.notify_all();
    return data;
  }

private:
  // One use of D is over: the last one frees its bytes.
  void used(const Descriptor& d) {
    if (!wanted(d) || --m_uses[d.digest] > 0) {
      return;
    }
    if (m_fetched.erase(d.digest) > 0 || m_fetching.contains(d.digest)) {
      m_window -= d.size;
    }
    m_fetching.erase(d.digest);
  }

  // The next blob to fetch: wanted, still to be used, not fetched or on its way.
  bool next_job() {
    while (m_next < m_blobs.size()) {
      const Descriptor& d = m_blobs[m_next];
      if (wanted(d) && m_uses[d.digest] > 0 && !m_fetched.contains(d.digest) &&
          !m_fetching.contains(d.digest)) {
        return true;
      }
      ++m_next;
    }
    return false;
  }

  void run(Registry& registry) {
    std::unique_lock lock(m_mutex);
    while (true) {
      // The window is full unless the reader waits for this very blob.
      m_changed.wait(lock, [&] {
        return m_stop || m_failure || !next_job() || m_window + m_blobs[m_next].size <= k_prefetch_bytes ||
               m_next <= m_taken;
      });
      if (m_stop || m_failure || !next_job()) {
        return;
      }
      const Descriptor d = m_blobs[m_next++];
      m_fetching.insert(d.digest);
      m_window += d.size;
      lock.unlock();
      Bytes data;
      std::exception_ptr failure;
      try {
        data.reserve(d.size);
        if (d.size > 0) {
          registry.read_blob_range(d, 0, d.size, [&](std::span<const std::byte> b) { append(data, b); });
        }
      } catch (...) {
        failure = std::current_exception();
      }
      lock.lock();
      if (failure) {
        m_failure = m_failure ? m_failure : failure;
      } else if (m_fetching.erase(d.digest) > 0) { // else every use was skipped meanwhile
        m_fetched.emplace(d.digest, std::move(data));
      }
      m_changed.notify_all();
    }
  }

  std::vector<Descriptor> m_blobs;
  std::mutex m_mutex;
  std::condition_variable m_changed;
  std::map<std::string, int> m_uses;      // digest -> uses from the reader's place on
  std::map<std::string, Bytes> m_fetched; // digest -> its bytes, until its last use
  std::set<std::string> m_fetching;
  size_t m_next;  // the next blob to fetch
  size_t m_taken; // the blobs before it are taken or skipped
  uint64_t m_window = 0;
  bool m_stop = false;
  std::exception_ptr m_failure;
  std::vector<std::thread> m_threads;
};

RegistrySource::RegistrySource(Registry registry, RegistryOptions options, OciSnapshot snapshot)
  : m_registry(std::move(registry)), m_options(std::move(options)), m_snapshot(std::move(snapshot)) {}

RegistrySource::~RegistrySource() = default;

bool RegistrySource::next(ArchiveEntry& entry) {
  if (m_next > m_snapshot.layers.size()) {
    return false;
  }
  m_blob = m_next == 0 ? &m_snapshot.config : &m_snapshot.layers[m_next - 1];
  entry = member_entry(m_snapshot, m_next);
  ++m_next;
  m_offset = 0;
  m_piece.clear();
  m_piece_used = 0;
  return true;
}

size_t RegistrySource::read(std::span<std::byte> buf) {
  if (m_piece_used == m_piece.size()) {
    m_offset += m_piece.size();
    m_piece.clear();
    m_piece_used = 0;
    uint64_t length = std::min<uint64_t>(k_piece_bytes, m_blob->size - m_offset);
    if (length == 0 || buf.empty()) {
      return 0;
    }
    size_t index = m_next - 1; // 0: the config
    if (Prefetcher::wanted(*m_blob) && index > 0) {
      if (!m_prefetch) {
        std::vector<Descriptor> blobs = {m_snapshot.config};
        blobs.insert(blobs.end(), m_snapshot.layers.begin(), m_snapshot.layers.end());
        m_prefetch = std::make_unique<Prefetcher>(m_registry, m_options, std::move(blobs), index);
      }
      m_piece = m_prefetch->take(index);
    } else {
      m_piece.reserve(length);
      m_registry.read_blob_range(*m_blob, m_offset, length,
                                 [&](std::span<const std::byte> data) { append(m_piece, data); });
    }
    if (m_piece.empty()) {
      return 0;
    }
  }
  size_t n = std::min(buf.size(), m_piece.size() - m_piece_used);
  std::copy_n(m_piece.begin() + static_cast<std::ptrdiff_t>(m_piece_used), n, buf.begin());
  m_piece_used += n;
  return n;
}

} // namespace ks
