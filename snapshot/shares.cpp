#include "snapshot/shares.hpp"

#include "snapshot/share_capture.hpp"
#include "storage/tar.hpp"
#include "util/beneath.hpp"
#include "util/error.hpp"

#include <filesystem>
#include <thread>

namespace ks {

namespace fs = std::filesystem;

namespace {

constexpr size_t k_max_removed_list = 64u << 20; // a removal list is names only

// The recorded virtiofsd options minus those the restore sets itself: the socket (a path in
// the run directory, never an inherited --fd) and the shared directory.
std::vector<std::string> kept_options(const std::vector<std::string>& recorded) {
  static const std::vector<std::string> replaced = {"--fd", "--socket-path", "--socket", "--shared-dir"};
  std::vector<std::string> out;
  for (size_t i = 0; i < recorded.size(); ++i) {
    const std::string& a = recorded[i];
    bool separate_value = std::find(replaced.begin(), replaced.end(), a) != replaced.end();
    bool joined_value = std::any_of(replaced.begin(), replaced.end(),
                                    [&](const std::string& o) { return a.rfind(o + "=", 0) == 0; });
    if (separate_value) {
      ++i; // skip its value too
    } else if (!joined_value) {
      out.push_back(a);
    }
  }
  return out;
}

} // namespace

ShareRestore::ShareRestore(const Json& manifest, std::map<std::string, std::string> share_dirs,
                           std::string virtiofsd, bool force)
  : m_shares(manifest.value("shares", Json::array())), m_share_dirs(std::move(share_dirs)),
    m_virtiofsd(std::move(virtiofsd)), m_force(force) {
  for (const auto& entry : m_share_dirs) {
    const std::string& tag = entry.first; // (not a structured binding: lambdas capture it)
    bool known =
      std::any_of(m_shares.begin(), m_shares.end(), [&](const Json& s) { return s["tag"] == tag; });
    if (!known) {
      throw Error("--share-dir " + tag + "=" + entry.second +
                    ": the snapshot has no virtio-fs share with that tag",

                  ExitCode::usage);
    }
  }
}

std::string ShareRestore::target_dir(const Json& share) const {
  auto it = m_share_dirs.find(share["tag"].get<std::string>());
  return it != m_share_dirs.end() ? it->second : share["source_dir"].get<std::string>();
}

void ShareRestore::prepare_target(const Json& share, const std::string& dir) const {
  std::string tag = share["tag"];
  std::error_code ec;
  if (share.value("capture", "full") != "full") {
    if (!fs::is_directory(dir)) {
      throw Error("virtio-fs share " + tag + " was saved without its contents (--share " + tag +
                    "=none), but " + dir + " does not exist here",
                  ExitCode::failed, "mount the shared storage there, or pass --share-dir " + tag + "=DIR");
    }
    return;
  }
  fs::create_directories(dir, ec);
  if (ec) {
    throw Error("failed to create " + dir + " for virtio-fs share " + tag + ": " + ec.message());
  }
  if (!fs::is_empty(dir)) {
    if (!m_force) {
      throw Error(dir + " (virtio-fs share " + tag + ") is not empty", ExitCode::failed,
                  "pass --force to replace its contents, or --share-dir " + tag +
                    "=DIR for another directory");
    }
    for (const auto& e : fs::directory_iterator(dir)) {
      fs::remove_all(e.path());
    }
  }
}

const Json* ShareRestore::share_of(const std::string& name, Part& part) const {
  for (const auto& share : m_shares) {
    for (auto [key, p] : {std::pair{"member", Part::base},
                          {"removed_member", Part::removed},
                          {"delta_member", Part::delta}}) {
      // Nothing is ever written into a directory the snapshot did not capture (--share
      // TAG=none: shared storage left in place), whatever a hostile manifest names.
      bool whole = share.value("capture", "full") == "full";
      if (whole && share.value(key, "") == name && !name.empty()) {
        part = p;
        return &share;
      }
    }
  }
  return nullptr;
}

// A live save's list of entries removed since the base (snapshot/live/share_precopy.hpp).
void ShareRestore::apply_removed(const Json& share, const std::string& json, const std::string& what) const {
  Json list = Json::parse(json, nullptr, false);
  if (!list.is_object() || !list.contains("removed") || !list["removed"].is_array()) {
    throw Error(what + " is not a list of removed entries", ExitCode::archive_invalid);
  }
  std::string dir = fs::canonical(target_dir(share)).string();
  for (const auto& name : list["removed"]) {
    if (!name.is_string()) {
      throw Error(what + " lists a removed entry that is not a name", ExitCode::archive_invalid);
    }
    remove_beneath(dir, name.get<std::string>());
  }
}

void ShareRestore::restore(ArchiveReader& reader) {
  for (const auto& share : m_shares) {
    std::string dir = target_dir(share);
    prepare_target(share, dir);
  }
  while (auto name = reader.next_if("shares/")) {
    Part part = Part::base;
    const Json* share = share_of(*name, part);
    if (share == nullptr) {
      throw Error(reader.what() + " holds " + *name + ", which its manifest does not list",
                  ExitCode::archive_invalid);
    }
    std::string dir = fs::canonical(target_dir(*share)).string(); // no symlinked ancestors
    if (part == Part::removed) {
      std::string json;
      reader.stream_member([&](const ArchiveReader::Source& source) {
        std::vector<std::byte> buf(1 << 16);
        while (size_t n = source(buf)) {
          if (json.size() + n > k_max_removed_list) {
            throw Error(*name + " is larger than " + std::to_string(k_max_removed_list >> 20) + " MiB",
                        ExitCode::archive_invalid);
          }
          json.append(reinterpret_cast<const char*>(buf.data()), n);
        }
      });
      apply_removed(*share, json, *name); // only once its SHA-256 matched
      continue;
    }
    reader.stream_member([&](const ArchiveReader::Source& source) { extract_tar_zst(source, dir, *name); });
  }
}

bool ShareRestore::apply_inline(const ArchiveReader& reader, ArchiveReader::Member& member) {
  Part part = Part::base;
  const Json* share = share_of(member.name, part);
  if (share == nullptr || part == Part::base) {
    return false;
  }
  reader.check_member(member); // nothing is removed or written before its hash matched
  std::string what = reader.what() + ": " + member.name;
  if (part == Part::removed) {
    if (member.data.size() > k_max_removed_list) {
      throw Error(what + " is larger than " + std::to_string(k_max_removed_list >> 20) + " MiB",
                  ExitCode::archive_invalid);
    }
    apply_removed(*share, std::string(reinterpret_cast<const char*>(member.data.data()), member.data.size()),
                  what);
    return true;
  }
  std::span<const std::byte> rest(member.data);
  extract_tar_zst(
    [&](std::span<std::byte> buf) {
      size_t n = std::min(buf.size(), rest.size());
      std::copy_n(rest.begin(), n, buf.begin());
      rest = rest.subspan(n);
      return n;
    },
    fs::canonical(target_dir(*share)).string(), what);
  return true;
}

void ShareRestore::start_daemons(const std::string& run_dir, const std::function<void(pid_t)>& started) {
  for (const auto& share : m_shares) {
    std::string tag = share["tag"];
    std::string socket = run_dir + "/vhost-fs-" + tag + ".sock";
    std::vector<std::string> argv = virtiofsd_command(share, m_virtiofsd);
    std::vector<std::string> kept = kept_options(share["virtiofsd"]["args"].get<std::vector<std::string>>());

    bool has_migration_mode = std::any_of(
      kept.begin(), kept.end(), [](const std::string& a) { return a.rfind("--migration-mode", 0) == 0; });
    argv.insert(argv.end(), kept.begin(), kept.end());
    argv.push_back("--socket-path=" + socket);
    argv.push_back("--shared-dir=" + target_dir(share));
    if (!has_migration_mode) {
      argv.push_back("--migration-mode=find-paths");
    }
    bool has_on_error = std::any_of(
      kept.begin(), kept.end(), [](const std::string& a) { return a.rfind("--migration-on-error", 0) == 0; });
    if (!has_on_error) {
      // A file deleted while open cannot be migrated; let the rest of the share carry on.
      argv.push_back("--migration-on-error=guest-error");
    }

    SpawnOptions so;
    so.argv = argv;
    so.stdout_path = so.stderr_path = run_dir + "/virtiofsd-" + tag + ".log";
    so.detach = Detach::yes;
    fs::remove(socket);
    auto daemon = std::make_unique<ChildProcess>(ChildProcess::spawn(so));
    started(daemon->pid());
    Deadline deadline(std::chrono::seconds(30));
    while (!fs::exists(socket)) {
      if (!daemon->running() || deadline.expired()) {
        std::string tail = log_tail(so.stdout_path, 2);
        throw Error("virtiofsd for share " + tag + " did not start" + (tail.empty() ? "" : ": " + tail),
                    ExitCode::failed,
                    "its log is " + so.stdout_path + "; pass --virtiofsd PATH to use another one");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    m_sockets[share["chardev"].get<std::string>()] = socket;
    m_daemons.push_back(std::move(daemon));
  }
}

std::vector<pid_t> ShareRestore::pids() const {
  std::vector<pid_t> pids;
  for (const auto& d : m_daemons) {
    pids.push_back(d->pid());
  }
  return pids;
}

std::vector<int> ShareRestore::release_daemons() {
  std::vector<int> pids;
  for (auto& d : m_daemons) {
    pids.push_back(d->release());
  }
  return pids;
}

} // namespace ks
