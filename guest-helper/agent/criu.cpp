// The helper's container operations: CRIU run in the guest (never killed halfway), the images
// on its tmpfs, holds, and what the host sends and takes (guest-helper/agent/commands.hpp).
#include "guest-helper/agent/containers.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace ks::agent {

namespace fs = std::filesystem;

namespace {

constexpr int k_criu_timeout_s = 30; // CRIU's own bound on seizing the tree (--timeout)

// Runs ARGV to its end (CRIU is never killed halfway: that can leave the tree it works on
// corrupted; its own --timeout bounds the dump). Returns the exit status, -1 if it did not run.
int run(const std::vector<std::string>& argv, const ContainerOps::Heartbeat& alive) {
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    return -1;
  }
  if (pid == 0) {
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
      ::dup2(null, 2);
    }
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  auto beat = std::chrono::steady_clock::now() + ContainerOps::k_heartbeat;
  for (;;) {
    pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      break;
    }
    if (done < 0 && errno != EINTR) {
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (std::chrono::steady_clock::now() >= beat) {
      alive();
      beat += ContainerOps::k_heartbeat;
    }
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// CRIU's own words for a failure: the last Error lines of its log.
std::string criu_errors(const std::string& log) {
  std::istringstream in(slurp(log, 4u << 20));
  std::vector<std::string> errors;
  for (std::string line; std::getline(in, line);) {
    if (line.find("Error (") != std::string::npos) {
      auto at = line.find("Error (");
      errors.push_back(line.substr(at));
    }
  }
  if (errors.empty()) {
    return "see " + log;
  }
  std::string out;
  for (size_t i = errors.size() > 3 ? errors.size() - 3 : 0; i < errors.size(); ++i) {
    out += (out.empty() ? "" : " | ") + errors[i];
  }
  return out + " (log: " + log + ")";
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

Json problems_json(const std::vector<Problem>& problems) {
  Json out = Json::array();
  for (const auto& p : problems) {
    out.push_back({{"problem", p.what}, {"fix", p.fix}});
  }
  return out;
}

[[noreturn]] void refuse(const std::vector<Problem>& problems) {
  const Problem& p = problems.front();
  fail(p.what, p.fix);
}

class SystemContainers : public ContainerOps {
public:
  explicit SystemContainers(GuestPaths paths) : m_p(std::move(paths)) {}

  Json list() override {
    std::vector<Problem> env = criu_problems(m_p);
    Json out = {{"criu", {{"path", criu_path(m_p)}, {"problems", problems_json(env)}}},
                {"containers", Json::array()}};
    for (const auto& id : container_ids(m_p)) {
      Json entry = {{"id", id}};
      try {
        Container c = find_container(m_p, id);
        std::vector<Problem> problems = env;
        auto own = container_problems(m_p, c);
        problems.insert(problems.end(), own.begin(), own.end());
        entry.update({{"state", c.state()},
                      {"pid", c.init},
                      {"processes", c.pids.size()},
                      {"rootfs", c.rootfs},
                      {"cgroup", c.cgroup},
                      {"checkpointable", problems.empty()},
                      {"problems", problems_json(problems)}});
      } catch (const std::exception& e) {
        entry.update(
          {{"state", "unknown"}, {"checkpointable", false}, {"problems", problems_json({{e.what(), ""}})}});
      }
      out["containers"].push_back(entry);
    }
    return out;
  }

  Json dump(const std::string& id, const std::string& after, std::chrono::seconds hold,
            const Heartbeat& alive) override {
    auto start = std::chrono::steady_clock::now();
    Container c = find_container(m_p, id);
    std::vector<Problem> problems = criu_problems(m_p);
    auto own = container_problems(m_p, c);
    problems.insert(problems.end(), own.begin(), own.end());
    if (!problems.empty()) {
      refuse(problems);
    }
    std::string dir = checkpoint_dir(id);
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::create_directories(dir, ec);
    if (ec) {
      fail("cannot create " + dir + ": " + ec.message());
    }
    bool was_frozen = c.frozen;
    std::vector<std::string> argv = {criu_path(m_p), "dump",
                                     "-t",           std::to_string(c.init),
                                     "-D",           dir,
                                     "-o",           "dump.log",
                                     "-v4",          "--freeze-cgroup",
                                     c.cgroup,       "--manage-cgroups",
                                     "--timeout",    std::to_string(k_criu_timeout_s)};
    argv.emplace_back("--leave-running"); // the host ends it, if at all, once the images are safe
    int rc = run(argv, alive);
    if (rc != 0) {
      // CRIU lets the tree go on a failure; the freezer is put back as it was.
      if (!was_frozen && is_frozen(c.cgroup)) {
        set_frozen(c.cgroup, false);
      }
      fs::remove_all(dir + "/pages-1.img", ec);
      fail("criu dump of container " + id + " failed (exit " + std::to_string(rc) +
           "): " + criu_errors(dir + "/dump.log"));
    }
    if (after != "resume" && !is_frozen(c.cgroup)) {
      set_frozen(c.cgroup, true);
    } else if (after == "resume" && !was_frozen && is_frozen(c.cgroup)) {
      set_frozen(c.cgroup, false);
    }
    if (after == "hold") {
      hold_until(id, c.cgroup, was_frozen, hold);
    }
    Json files = Json::array();
    std::vector<fs::directory_entry> entries{fs::directory_iterator(dir), fs::directory_iterator()};
    std::sort(entries.begin(), entries.end());
    for (const auto& e : entries) {
      std::string name = e.path().filename();
      if (e.is_regular_file() && name != "dump.log") {
        files.push_back({{"name", name}, {"size", e.file_size()}});
      }
    }
    return {{"id", id},
            {"files", files},
            {"spec", c.spec},
            {"init_pid", c.init},
            {"was_paused", was_frozen},
            {"state", after == "hold"                  ? "held"
                      : after == "pause" || was_frozen ? "paused"
                                                       : "running"},
            {"dump_seconds", seconds_since(start)}};
  }

  int open_image(const std::string& id, const std::string& name, uint64_t& size) override {
    if (!valid_image_name(name)) {
      fail("invalid image name \"" + name + "\"");
    }
    std::string path = checkpoint_dir(id) + "/" + name;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      if (fd >= 0) {
        ::close(fd);
      }
      fail("no checkpoint image " + name + " of container " + id, "run kata-snapshot-container-dump first");
    }
    size = static_cast<uint64_t>(st.st_size);
    return fd;
  }

  int create_image(const std::string& id, const std::string& name, uint64_t size) override {
    if (!valid_image_name(name)) {
      fail("invalid image name \"" + name + "\"");
    }
    check_id(id);
    std::string dir = restore_dir(id);
    std::error_code ec;
    fs::create_directories(dir, ec);
    struct statvfs vfs {};
    if (::statvfs(dir.c_str(), &vfs) == 0) {
      uint64_t free = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
      if (size > free) {
        fail("no room in the guest for image " + name + ": " + std::to_string(size) + " bytes, " +
               std::to_string(free) + " free in " + dir,
             "give the guest more memory (its tmpfs holds the images)");
      }
    }
    std::string path = dir + "/" + name;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
      fail("cannot create " + path + ": " + std::strerror(errno));
    }
    return fd;
  }

  Json restore(const std::string& id, const Heartbeat& alive) override {
    auto start = std::chrono::steady_clock::now();
    std::vector<Problem> env = criu_problems(m_p);
    if (!env.empty()) {
      refuse(env);
    }
    Container c = find_container(m_p, id);
    if (!c.pids.empty()) {
      fail("container " + id + " is " + c.state() + " in this guest (" + std::to_string(c.pids.size()) +
             " processes)",
           "stop it first, or restore into a sandbox where it is not running");
    }
    std::string dir = restore_dir(id);
    if (::access((dir + "/inventory.img").c_str(), R_OK) != 0) {
      fail("no checkpoint images for container " + id + " were received");
    }
    std::error_code ec;
    // Restoring into a frozen cgroup hangs: thaw it first.
    if (fs::exists(c.cgroup, ec) && is_frozen(c.cgroup)) {
      set_frozen(c.cgroup, false);
    }
    std::string pidfile = dir + "/restored.pid";
    int rc = run({criu_path(m_p), "restore", "-D", dir, "-o", "restore.log", "-v4", "--root", c.rootfs,
                  "--manage-cgroups", "--restore-detached", "--pidfile", pidfile},
                 alive);
    if (rc != 0) {
      std::string why = criu_errors(dir + "/restore.log");
      fail("criu restore of container " + id + " failed (exit " + std::to_string(rc) + "): " + why);
    }
    // A checkpoint of a paused container restores paused: it must end up running.
    if (fs::exists(c.cgroup, ec) && is_frozen(c.cgroup)) {
      set_frozen(c.cgroup, false);
    }
    long pid = std::atol(slurp(pidfile).c_str());
    Container now = find_container(m_p, id);
    Json out = {{"id", id},
                {"pid", pid},
                {"state", now.state()},
                {"processes", now.pids.size()},
                {"restore_seconds", seconds_since(start)}};
    fs::remove_all(dir, ec); // the images take guest memory
    return out;
  }

  Json finish(const std::string& id, const std::string& action) override {
    std::optional<Hold> held;
    {
      std::lock_guard lock(m_mutex);
      if (auto it = m_holds.find(id); it != m_holds.end()) {
        held = it->second;
        m_holds.erase(it);
      }
    }
    if (!held) {
      fail("container " + id + " is not held after a checkpoint (or its hold ran out and it was thawed)");
    }
    if (action == "resume") {
      if (!held->was_frozen) {
        set_frozen(held->cgroup, false);
      }
      return {{"id", id}, {"state", held->was_frozen ? "paused" : "running"}};
    }
    // cgroup.kill (Linux 5.14) kills every process, frozen or not; SIGKILL each one otherwise.
    if (!write_text(held->cgroup + "/cgroup.kill", "1")) {
      std::istringstream procs(slurp(held->cgroup + "/cgroup.procs"));
      for (long pid; procs >> pid;) {
        ::kill(static_cast<pid_t>(pid), SIGKILL);
      }
    }
    set_frozen(held->cgroup, false);
    for (int i = 0; i < 100 && !trim(slurp(held->cgroup + "/cgroup.procs")).empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    bool gone = trim(slurp(held->cgroup + "/cgroup.procs")).empty();
    if (!gone) {
      fail("container " + id + " did not end within 5 s of SIGKILL");
    }
    return {{"id", id}, {"state", "stopped"}};
  }

  void host_gone() override {
    std::lock_guard lock(m_mutex);
    for (const auto& [id, hold] : m_holds) {
      if (!hold.was_frozen) {
        set_frozen(hold.cgroup, false);
      }
      std::fprintf(stderr,
                   "kata-snapshot-helper: the host went away during the checkpoint of %s: thawed it\n",
                   id.c_str());
    }
    m_holds.clear();
  }

  Json discard(const std::string& id) override {
    check_id(id);
    std::error_code ec;
    uint64_t n = fs::remove_all(checkpoint_dir(id), ec);
    n += fs::remove_all(restore_dir(id), ec);
    return {{"removed", n}};
  }

private:
  struct Hold {
    std::string cgroup;
    bool was_frozen = false;
    std::chrono::steady_clock::time_point until;
  };

  // Keeps ID frozen until finish() or HOLD from now; a thread thaws what runs out.
  void hold_until(const std::string& id, const std::string& cgroup, bool was_frozen,
                  std::chrono::seconds hold) {
    std::lock_guard lock(m_mutex);
    m_holds[id] = {cgroup, was_frozen, std::chrono::steady_clock::now() + hold};
    if (m_watcher_started) {
      return;
    }
    m_watcher_started = true;
    std::thread([this] {
      for (;;) {
        std::this_thread::sleep_for(std::chrono::seconds(1));
        std::lock_guard guard(m_mutex);
        for (auto it = m_holds.begin(); it != m_holds.end();) {
          if (std::chrono::steady_clock::now() < it->second.until) {
            ++it;
            continue;
          }
          if (!it->second.was_frozen) {
            set_frozen(it->second.cgroup, false);
          }
          std::fprintf(stderr, "kata-snapshot-helper: no word from the host on container %s: thawed it\n",
                       it->first.c_str());
          it = m_holds.erase(it);
        }
      }
    }).detach();
  }

  static void check_id(const std::string& id) {
    if (!valid_image_name(id)) {
      fail("invalid container id \"" + id + "\"");
    }
  }
  std::string checkpoint_dir(const std::string& id) const {
    check_id(id);
    return m_p.work + "/checkpoint/" + id;
  }
  std::string restore_dir(const std::string& id) const {
    check_id(id);
    return m_p.work + "/restore/" + id;
  }

  GuestPaths m_p;
  std::mutex m_mutex; // guards m_holds, which the watcher thread also reads
  std::map<std::string, Hold> m_holds;
  bool m_watcher_started = false;
};

} // namespace

std::shared_ptr<ContainerOps> system_containers(GuestPaths paths) {
  return std::make_shared<SystemContainers>(std::move(paths));
}

} // namespace ks::agent
