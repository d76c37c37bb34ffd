#include "snapshot/network.hpp"

#include "util/child_process.hpp"
#include "util/error.hpp"
#include "util/strings.hpp"

#include <cerrno>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <filesystem>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/nsfs.h>
#include <regex>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace ks {

namespace fs = std::filesystem;
using Json = nlohmann::json;

Json TapNetdev::to_json() const {
  return {{"netdev", id}, {"ifnames", ifnames}};
}

TapNetdev TapNetdev::from_json(const Json& j) {
  return {j.at("netdev").get<std::string>(), j.at("ifnames").get<std::vector<std::string>>()};
}

Json NetworkInfo::to_json() const {
  Json list = Json::array();
  for (const auto& t : taps) {
    list.push_back(t.to_json());
  }
  return {{"taps", list}, {"vhost", vhost}, {"netns", netns}};
}

NetworkInfo NetworkInfo::from_json(const Json& j) {
  NetworkInfo info;
  if (j.is_null()) {
    return info;
  }
  for (const auto& t : j.value("taps", Json::array())) {
    info.taps.push_back(TapNetdev::from_json(t));
  }
  info.vhost = j.value("vhost", false);
  info.netns = j.value("netns", "");
  return info;
}

const TapNetdev* NetworkInfo::find(const std::string& netdev) const {
  for (const auto& t : taps) {
    if (t.id == netdev) {
      return &t;
    }
  }
  return nullptr;
}

std::vector<std::pair<std::string, std::vector<int>>> parse_info_network(const std::string& text) {
  static const std::regex re(R"(([^\s\\:]+): index=\d+,type=tap,fd=(\d+))");
  std::vector<std::pair<std::string, std::vector<int>>> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) {
    std::string id = (*it)[1];
    int fd = std::stoi((*it)[2]);
    if (out.empty() || out.back().first != id) {
      out.push_back({id, {}});
    }
    out.back().second.push_back(fd);
  }
  return out;
}

namespace {

std::string tap_ifname(pid_t pid, int fd) {
  std::string path = "/proc/" + std::to_string(pid) + "/fdinfo/" + std::to_string(fd);
  for (const auto& line : split(read_file(path), '\n')) {
    if (line.rfind("iff:", 0) == 0) {
      return trim(line.substr(4));
    }
  }
  return {};
}

bool holds_vhost_net(pid_t pid) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    if (fs::read_symlink(e.path(), ec) == "/dev/vhost-net") {
      return true;
    }
  }
  return false;
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {};
  struct stat sb {};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

// The /run/netns name of QEMU's namespace, or "" when it shares ours or has no name.
std::string named_netns(pid_t pid) {
  std::string ns = "/proc/" + std::to_string(pid) + "/ns/net";
  if (same_file(ns, "/proc/self/ns/net")) {
    return {};
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/run/netns", ec)) {
    if (same_file(ns, e.path())) {
      return e.path();
    }
  }
  return {};
}

} // namespace

NetworkInfo discover_network(qmp::Client& qmp, pid_t qemu_pid) {
  NetworkInfo info;
  std::string text = qmp.execute("human-monitor-command", {{"command-line", "info network"}});
  for (const auto& [id, fds] : parse_info_network(text)) {
    TapNetdev tap{id, {}};
    for (int fd : fds) {
      std::string name = tap_ifname(qemu_pid, fd);
      if (name.empty()) {
        throw Error("netdev " + id + ": QEMU's fd " + std::to_string(fd) + " is not a tap device",
                    ExitCode::failed,
                    "kata-snapshot re-creates taps only; other fd-passed netdevs cannot be saved");
      }
      tap.ifnames.push_back(name);
    }
    info.taps.push_back(std::move(tap));
  }
  if (!info.taps.empty()) {
    info.vhost = holds_vhost_net(qemu_pid);
    info.netns = named_netns(qemu_pid);
  }
  return info;
}

bool vhost_net_usable() {
  return ::access("/dev/vhost-net", R_OK | W_OK) == 0;
}

std::string vhost_net_dropped(const std::string& netdev) {
  return "netdev " + netdev + " used vhost-net, which this host lacks (/dev/vhost-net): it runs without";
}

NetNamespace NetNamespace::open(const std::string& name_or_path) {
  NetNamespace ns;
  ns.m_path = name_or_path.find('/') == std::string::npos ? "/run/netns/" + name_or_path : name_or_path;
  int fd = ::open(ns.m_path.c_str(), O_RDONLY | O_CLOEXEC);
  const char* hint = "give a name from `ip netns list` or a path such as /proc/PID/ns/net";
  if (fd < 0) {
    int err = errno;
    throw Error("cannot open network namespace " + ns.m_path + ": " + std::strerror(err), ExitCode::usage,
                hint);
  }
  ns.m_fd = Fd(fd);
  if (::ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET) {
    throw Error(ns.m_path + " is not a network namespace", ExitCode::usage, hint);
  }

  return ns;
}

namespace {

// Attaches a new fd to tap IFNAME (creating it); on failure returns no fd and sets ERR.
Fd attach_tap(const std::string& ifname, bool multi_queue, int& err) {
  Fd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!fd) {
    throw_errno("cannot open /dev/net/tun to re-create tap " + ifname);
  }
  struct ifreq ifr {};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags =
    static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multi_queue ? IFF_MULTI_QUEUE : 0));
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
    err = errno;
    return Fd();
  }
  return fd;
}

void set_up(const std::string& ifname) {
  Fd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  struct ifreq ifr {};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  if (!sock || ::ioctl(sock.get(), SIOCGIFFLAGS, &ifr) != 0) {
    throw_errno("cannot read the flags of tap " + ifname);
  }
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (::ioctl(sock.get(), SIOCSIFFLAGS, &ifr) != 0) {
    throw_errno("cannot set tap " + ifname + " up");
  }
}

} // namespace

void NetNamespace::connect_tc_redirect(const std::string& iface, const std::string& tap) const {
  auto tc = [&](std::vector<std::string> args, bool must) {
    args.insert(args.begin(), "tc");
    CommandResult r = run_command(args, Millis(10000), m_fd.get());
    if (must && r.status != 0) {
      throw Error("cannot connect tap " + tap + " to " + iface + " in " + m_path + ": `" + join(args, " ") +
                    "` failed: " + trim(r.error_output),
                  ExitCode::failed, "the pod's interface must exist in --netns, as the CNI plugin made it");
    }
  };
  auto redirect = [&](const std::string& from, const std::string& to) {
    tc({"filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match", "u8", "0", "0",
        "action", "mirred", "egress", "redirect", "dev", to},
       true);
  };
  tc({"qdisc", "del", "dev", iface, "ingress"}, false); // with the filter to the old tap
  tc({"qdisc", "add", "dev", iface, "ingress"}, true);
  redirect(iface, tap);
  tc({"qdisc", "add", "dev", tap, "ingress"}, true);
  redirect(tap, iface);
}

std::vector<Fd> NetNamespace::open_tap(const std::string& ifname, size_t queues) const {
  if (ifname.empty() || ifname.size() >= IFNAMSIZ) {
    throw Error("invalid tap name '" + ifname + "' in the snapshot", ExitCode::archive_invalid);
  }
  std::vector<Fd> fds;
  std::exception_ptr error;
  // setns changes only the calling thread's namespace: do the work on a thread of its own.
  std::thread worker([&] {
    try {
      if (::setns(m_fd.get(), CLONE_NEWNET) != 0) {
        throw_errno("cannot enter network namespace " + m_path);
      }
      bool multi_queue = queues > 1;
      for (size_t q = 0; q < queues; ++q) {
        int err = 0;
        Fd fd = attach_tap(ifname, multi_queue, err);
        if (!fd && q == 0 && err == EINVAL) { // an existing persistent tap with the other queue mode
          multi_queue = !multi_queue;
          fd = attach_tap(ifname, multi_queue, err);
        }
        if (!fd) {

          throw Error("cannot re-create tap " + ifname + " in " + m_path + ": " + std::strerror(err),
                      ExitCode::failed,
                      err == EBUSY ? "another process holds it: is the VM that owned it still running?"
                                   : std::string());
        }
        fds.push_back(std::move(fd));
      }
      set_up(ifname);
    } catch (...) {
      error = std::current_exception();
    }
  });
  worker.join();
  if (error) {
    std::rethrow_exception(error);
  }
  return fds;
}

} // namespace ks
