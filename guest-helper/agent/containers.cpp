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

constexpr uint64_t k_spec_max = 1u << 20;

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

} // namespace

std::string slurp(const std::string& path, uint64_t max) {
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

[[noreturn]] void fail(const std::string& what, const std::string& fix) {
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

std::string criu_path(const GuestPaths& p) {
  for (const auto& c : p.criu) {
    if (::access(c.c_str(), X_OK) == 0) {
      return c;
    }
  }
  return {};
}

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
} // namespace ks::agent
