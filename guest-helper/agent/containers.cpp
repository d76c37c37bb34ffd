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
constexpr uint64_t k_spec_max = 1u << 20;

std::string slurp(const std::string& path, uint64_t max = 1u << 20) {
  std::ifstream in(path, std::ios::binary);
  std::string out;
  if (!in) {
    return out;
  }
  out.resize(max);
  in.read(out.data(), static_cast<std::streamsize>(max));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
    s.pop_back();
  }
  return s;
}

[[noreturn]] void fail(const std::string& what, const std::string& fix = {}) {
  throw std::runtime_error(fix.empty() ? what : what + "; " + fix);
}

bool write_text(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    return false;
  }
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

// The "frozen" line of cgroup.events settles after a write to cgroup.freeze.
bool set_frozen(const std::string& cgroup, bool frozen) {
  if (!write_text(cgroup + "/cgroup.freeze", frozen ? "1" : "0")) {
    return false;
  }
  std::string want = frozen ? "frozen 1" : "frozen 0";
  for (int i = 0; i < 100; ++i) {
    if (slurp(cgroup + "/cgroup.events").find(want) != std::string::npos) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

bool is_frozen(const std::string& cgroup) {
  return trim(slurp(cgroup + "/cgroup.freeze")) == "1";
}

// Fields of /proc/PID/stat after the command name: [0] state, [1] ppid, [2] pgrp, [3] session.
std::vector<std::string> stat_fields(const GuestPaths& p, pid_t pid) {
  std::string stat = slurp(p.proc + "/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  std::vector<std::string> out;
  if (close == std::string::npos) {
    return out;
  }
  std::istringstream in(stat.substr(close + 1));
  for (std::string f; in >> f;) {
    out.push_back(f);
  }
  return out;
}

// NSpid of PID: its pid in each pid namespace, outermost first.
std::vector<long> ns_pids(const GuestPaths& p, pid_t pid) {
  std::istringstream in(slurp(p.proc + "/" + std::to_string(pid) + "/status"));
  std::vector<long> out;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("NSpid:", 0) == 0) {
      std::istringstream nums(line.substr(6));
      for (long v; nums >> v;) {
        out.push_back(v);
      }
    }
  }
  return out;
}

std::string link_target(const std::string& path) {
  std::error_code ec;
  auto t = fs::read_symlink(path, ec);
  return ec ? std::string() : t.string();
}

std::string find_program(const GuestPaths& p, const std::string& name) {
  for (const auto& dir : p.path) {
    std::string f = dir + "/" + name;
    if (::access(f.c_str(), X_OK) == 0) {
      return f;
    }
  }
  return {};
}

std::string criu_path(const GuestPaths& p) {
  for (const auto& c : p.criu) {
    if (::access(c.c_str(), X_OK) == 0) {
      return c;
    }
  }
  return {};
}

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

// Socket inodes of PID's open files, and whether one of its fds is a terminal.
void scan_fds(const GuestPaths& p, pid_t pid, std::set<std::string>& sockets, std::string& tty) {
  std::error_code ec;
  std::string dir = p.proc + "/" + std::to_string(pid) + "/fd";
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string t = link_target(e.path());
    if (t.rfind("socket:[", 0) == 0) {
      sockets.insert(t.substr(8, t.size() - 9));
    } else if (t.rfind("/dev/pts/", 0) == 0 || t == "/dev/console" || t.rfind("/dev/tty", 0) == 0) {
      tty = t;
    }
  }
}

// Established TCP connections among SOCKETS, from the tables of PID's network namespace.
int tcp_connections(const GuestPaths& p, pid_t pid, const std::set<std::string>& sockets) {
  int n = 0;
  for (const char* table : {"/net/tcp", "/net/tcp6"}) {
    std::istringstream in(slurp(p.proc + "/" + std::to_string(pid) + table, 16u << 20));
    std::string line;
    std::getline(in, line); // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::vector<std::string> cols;
      for (std::string c; f >> c;) {
        cols.push_back(c);
      }
      // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
      if (cols.size() > 9 && cols[3] != "0A" && sockets.count(cols[9])) {
        ++n;
      }
    }
  }
  return n;
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

bool valid_image_name(const std::string& name) {
  if (name.empty() || name.size() > 200 || name[0] == '.' || name[0] == '-') {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' || ch == '-';
  });
}

std::vector<std::string> container_ids(const GuestPaths& paths) {
  std::vector<std::string> ids;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(paths.containers, ec)) {
    std::string id = e.path().filename();
    if (valid_image_name(id) && fs::exists(e.path() / "config.json")) {
      ids.push_back(id);
    }
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

Container find_container(const GuestPaths& p, const std::string& id) {
  if (!valid_image_name(id)) {
    fail("invalid container id \"" + id + "\"");
  }
  Container c;
  c.id = id;
  c.bundle = p.containers + "/" + id;
  std::string text = slurp(c.bundle + "/config.json", k_spec_max + 1);
  if (text.empty()) {
    fail("no container " + id + " in this guest (no " + c.bundle + "/config.json)",
         "`kata-snapshot containers` lists the ones there are");
  }
  if (text.size() > k_spec_max) {
    fail("the spec of container " + id + " is over 1 MiB");
  }
  c.spec = Json::parse(text, nullptr, false);
  if (!c.spec.is_object()) {
    fail("the spec of container " + id + " (" + c.bundle + "/config.json) is not valid JSON");
  }
  std::string root = "rootfs";
  if (c.spec.contains("root") && c.spec["root"].is_object() && c.spec["root"].value("path", "") != "") {
    root = c.spec["root"]["path"].get<std::string>();
  }
  c.rootfs = root[0] == '/' ? root : c.bundle + "/" + root;
  std::string cg;
  if (c.spec.contains("linux") && c.spec["linux"].is_object() && c.spec["linux"].contains("cgroupsPath") &&
      c.spec["linux"]["cgroupsPath"].is_string()) {
    cg = c.spec["linux"]["cgroupsPath"];
  }
  if (cg.empty() || cg[0] != '/' || cg.find("..") != std::string::npos) {
    fail("container " + id + " has no cgroup path kata-snapshot understands (linux.cgroupsPath \"" + cg +
           "\")",
         "only cgroupfs paths (/a/b) are supported, not systemd's slice:prefix:name");
  }
  c.cgroup = p.cgroup_root + cg;
  std::istringstream procs(slurp(c.cgroup + "/cgroup.procs"));
  for (long pid; procs >> pid;) {
    c.pids.push_back(static_cast<pid_t>(pid));
    auto ns = ns_pids(p, static_cast<pid_t>(pid));
    if (ns.size() > 1 && ns.back() == 1) {
      c.init = static_cast<pid_t>(pid);
    }
  }
  c.frozen = !c.pids.empty() && is_frozen(c.cgroup);
  return c;
}

std::vector<Problem> criu_problems(const GuestPaths& p) {
  std::vector<Problem> out;
  if (criu_path(p).empty()) {
    out.push_back({"CRIU is not installed in the guest",
                   "add criu (4.x) and the libraries it loads to the guest image (docs/containers.md)"});
  }
  for (const char* tool : {"tar", "gzip"}) {
    std::string f = find_program(p, tool);
    std::error_code ec;
    std::string real = f.empty() ? "" : fs::canonical(f, ec).filename().string();
    if (f.empty() || real == "busybox") {
      out.push_back(
        {std::string("GNU ") + tool + " is missing in the guest" +
           (f.empty() ? "" : " (" + f + " is busybox's)"),
         "CRIU archives the container's tmpfs mounts with GNU tar and gzip: add them to the guest image"});
    }
  }
  std::string missing;
  for (const auto& m : k_criu_modules) {
    if (!fs::exists(p.sys_module + "/" + m)) {
      missing += (missing.empty() ? "" : " ") + m;
    }
  }
  if (!missing.empty()) {
    std::string all;
    for (const auto& m : k_criu_modules) {
      all += (all.empty() ? "" : " ") + m;
    }
    out.push_back({"kernel modules CRIU needs are not loaded in the guest: " + missing,
                   "load them in this order before a checkpoint (modprobe, or insmod without it): " + all});
  }
  unsigned long flags = std::strtoul(trim(slurp(p.net + "/lo/flags")).c_str(), nullptr, 16);
  if ((flags & 1) == 0) {
    out.push_back({"the guest's loopback interface is down", "bring it up: ip link set lo up"});
  }
  std::istringstream mounts(slurp(p.proc + "/self/mounts"));
  for (std::string line; std::getline(mounts, line);) {
    std::istringstream f(line);
    std::string dev, dir, type;
    f >> dev >> dir >> type;
    if (dir == "/" && type == "rootfs") {
      out.push_back({"the guest's root file system is its initramfs, where CRIU cannot work",
                     "switch_root onto a tmpfs or a real root file system at boot"});
      break;
    }
  }
  return out;
}

std::vector<Problem> container_problems(const GuestPaths& p, const Container& c) {
  std::vector<Problem> out;
  if (c.pids.empty()) {
    out.push_back(
      {"container " + c.id + " is not running (its cgroup " + c.cgroup + " has no processes)", ""});
    return out;
  }
  if (c.init == 0) {
    out.push_back({"container " + c.id + " has no init process of its own pid namespace",
                   "container mode needs a container with its own pid namespace"});
    return out;
  }
  auto f = stat_fields(p, c.init);
  if (f.size() > 3 && f[3] != std::to_string(c.init)) {
    out.push_back({"the init of container " + c.id + " (pid " + std::to_string(c.init) +
                     ") is not a session leader: its session " + f[3] +
                     " belongs to a process outside the container, which CRIU cannot restore",
                   "start the container so that its init calls setsid() (crun and runc do when the "
                   "process has no terminal), then checkpoint it"});
  }
  std::string self_net = link_target(p.proc + "/self/ns/net");
  std::string init_net = link_target(p.proc + "/" + std::to_string(c.init) + "/ns/net");
  if (!init_net.empty() && init_net != self_net) {
    out.push_back(
      {"container " + c.id + " has its own network namespace, which container mode does not support yet",
       "use a whole-VM snapshot (kata-snapshot save without --container)"});
  }
  std::set<std::string> sockets;
  std::string tty;
  for (pid_t pid : c.pids) {
    scan_fds(p, pid, sockets, tty);
  }
  if (!tty.empty()) {
    out.push_back(
      {"container " + c.id + " holds a terminal (" + tty + "), which container mode does not support",
       "run it without a terminal, or use a whole-VM snapshot"});
  }
  if (int n = tcp_connections(p, c.init, sockets); n > 0) {
    out.push_back({"container " + c.id + " has " + std::to_string(n) +
                     " open TCP connections, which container mode does not carry over",
                   "close them first, or use a whole-VM snapshot"});
  }
  return out;
}

std::shared_ptr<ContainerOps> system_containers(GuestPaths paths) {
  return std::make_shared<SystemContainers>(std::move(paths));
}

} // namespace ks::agent
