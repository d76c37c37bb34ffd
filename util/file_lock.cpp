#include "util/file_lock.hpp"

#include "util/cancel.hpp"
#include "util/child_process.hpp"
#include "util/error.hpp"
#include "util/strings.hpp"

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/file.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace ks {

namespace {

using Json = nlohmann::json;

std::string host_name() {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

struct Record {
  std::string file;
  Json json;
  bool alive_here() const { // a process of this host that is still the one that wrote it
    return json.value("host", "") == host_name() &&
           process_start_ticks(json.value("pid", 0)) == json.value("start_ticks", std::string("?"));
  }
  bool on_this_host() const { return json.value("host", "") == host_name(); }
  std::string describe() const {
    return json.value("host", "?") + " pid " + std::to_string(json.value("pid", 0)) + " (" +
           json.value("purpose", "?") + ", " + json.value("mode", "?") + ", since " +
           json.value("started", "?") + ")";
  }
};

std::vector<Record> read_records(const std::string& dir) {
  std::vector<Record> out;
  for (const auto& name : list_dir(dir)) {
    if (!name.ends_with(".json")) {
      continue;
    }
    Record r{dir + "/" + name, Json()};
    try {
      r.json = Json::parse(read_file(r.file), nullptr, false);
    } catch (const Error&) {
      continue; // removed meanwhile
    }
    if (r.json.is_object()) {
      out.push_back(std::move(r));
    }
  }
  return out;
}

} // namespace

void make_dirs(const std::string& path) {
  std::string sofar = path.starts_with('/') ? "" : ".";
  for (const auto& part : split(path, '/')) {
    if (part.empty()) {
      continue;
    }
    sofar += "/" + part;
    if (::mkdir(sofar.c_str(), 0700) != 0 && errno != EEXIST) {
      throw_errno("failed to create the directory " + sofar);
    }
  }
}

std::vector<std::string> lock_holders(const std::string& path) {
  std::vector<std::string> out;
  for (const auto& r : read_records(path + ".holders")) {
    if (!r.on_this_host() || r.alive_here()) {
      out.push_back(r.describe());
    }
  }
  return out;
}

FileLock::FileLock(std::string path, Options options) : m_path(std::move(path)), m_o(std::move(options)) {
  m_fd = open_file(m_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  const int op = m_o.mode == LockMode::shared ? LOCK_SH : LOCK_EX;
  auto deadline = std::chrono::steady_clock::now() + m_o.wait;
  bool told = false;
  while (::flock(m_fd.get(), op | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      throw_errno("failed to lock " + m_path);
    }
    std::vector<std::string> holders = lock_holders(m_path);
    std::string by = holders.empty() ? std::string() : " by " + join(holders, ", ");
    if (std::chrono::steady_clock::now() >= deadline) {
      throw Error(m_o.what + " is locked" + by, ExitCode::locked, m_o.hint);
    }
    if (!told && isatty(STDERR_FILENO)) {
      std::fprintf(stderr, "kata-snapshot: waiting for %s, locked%s\n", m_o.what.c_str(), by.c_str());
      told = true;
    }
    throw_if_cancelled();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  sweep_records();
  write_record();
}

FileLock::~FileLock() {
  if (!m_record.empty()) {
    ::unlink(m_record.c_str());
  }
}

// Records that cannot belong to a holder any more: with the lock exclusive, every other
// one; shared, an exclusive holder's and those of dead processes of this host.
void FileLock::sweep_records() {
  for (const auto& r : read_records(m_path + ".holders")) {
    bool stale = m_o.mode == LockMode::exclusive || r.json.value("mode", "") == "exclusive" ||
                 (r.on_this_host() && !r.alive_here());
    if (stale && ::unlink(r.file.c_str()) == 0) {
      m_taken_over.push_back(r.describe());
    }
  }
}

void FileLock::write_record() {
  std::string dir = m_path + ".holders";
  make_dirs(dir);
  pid_t pid = ::getpid();
  Json j = {{"host", host_name()},
            {"pid", pid},
            {"start_ticks", process_start_ticks(pid)},
            {"started", utc_now_as("%Y-%m-%dT%H:%M:%SZ")},
            {"purpose", m_o.purpose},
            {"mode", m_o.mode == LockMode::shared ? "shared" : "exclusive"}};
  std::string file = dir + "/" + host_name() + "-" + std::to_string(pid) + ".json";
  Fd f = open_file(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  write_all(f.get(), j.dump() + "\n", file);
  m_record = file;
}

} // namespace ks
