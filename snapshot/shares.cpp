#include "snapshot/shares.hpp"

#include "snapshot/share_capture.hpp"
#include "storage/tar.hpp"
#include "util/error.hpp"

#include <filesystem>
#include <thread>

namespace ks {

namespace fs = std::filesystem;

namespace {

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

void ShareRestore::restore(ArchiveReader& reader) {
  for (const auto& share : m_shares) {
    std::string dir = target_dir(share);
    prepare_target(share, dir);
  }
  while (auto name = reader.next_if("shares/")) {
    auto it = std::find_if(m_shares.begin(), m_shares.end(),
                           [&](const Json& s) { return s.value("member", "") == *name; });
    if (it == m_shares.end()) {
      throw Error(reader.what() + " holds " + *name + ", which its manifest does not list",
                  ExitCode::archive_invalid);
    }
    std::string dir = fs::canonical(target_dir(*it)).string(); // no symlinked ancestors
    reader.stream_member([&](const ArchiveReader::Source& source) { extract_tar_zst(source, dir, *name); });
  }
}

void ShareRestore::start_daemons(const std::string& run_dir) {
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

std::vector<int> ShareRestore::release_daemons() {
  std::vector<int> pids;
  for (auto& d : m_daemons) {
    pids.push_back(d->release());
  }
  return pids;
}

} // namespace ks
