// Tap network devices. QEMU under Kata gets its taps as inherited file descriptors (-netdev
// tap,fds=N or getfd + netdev_add over QMP), which cannot travel in an archive. Save records the
// interface name behind every such fd; load re-creates the taps by name inside a network
// namespace (--netns) and hands the new fds to the new QEMU.
#pragma once

#include "qmp/qmp_client.hpp"
#include "util/fd.hpp"

#include <nlohmann/json.hpp>
#include <string>
#include <sys/types.h>
#include <vector>

namespace ks {

// A tap netdev and the interfaces behind its queues (one fd per queue).
struct TapNetdev {
  std::string id;                   // the netdev id
  std::vector<std::string> ifnames; // per queue, in QEMU's order (all the same for multi-queue)
  nlohmann::json to_json() const;
  static TapNetdev from_json(const nlohmann::json& j);
};

// The network state save records in the manifest ("network").
struct NetworkInfo {
  std::vector<TapNetdev> taps;
  bool vhost = false; // QEMU held /dev/vhost-net: the taps used vhost-net
  std::string netns;  // the namespace QEMU ran in, when it has a name in /run/netns (else "")
  nlohmann::json to_json() const;
  static NetworkInfo from_json(const nlohmann::json& j);
  const TapNetdev* find(const std::string& netdev) const;
};

// Every tap netdev of QEMU (PID) that was passed as file descriptors, from the monitor's
// "info network" (netdev -> fd) and /proc/PID/fdinfo (fd -> interface name).
NetworkInfo discover_network(qmp::Client& qmp, pid_t qemu_pid);

// Parses "info network" output: netdev id -> the fds of its tap queues, in order.
std::vector<std::pair<std::string, std::vector<int>>> parse_info_network(const std::string& text);

// Kata's NetInterworkingModel for tc redirection between the pod's interface and the tap.
constexpr int k_kata_tcfilter_model = 2;

// Whether this host can give a restored QEMU vhost-net.
bool vhost_net_usable();

// The warning when NETDEV used vhost-net and this host has none: the NIC runs without it
// (vhost-net is a host-side accelerator; the guest does not see the difference).
std::string vhost_net_dropped(const std::string& netdev);

// A network namespace to re-create taps in and to run the restored QEMU in.
class NetNamespace {
public:
  // NAME as `ip netns` knows it (/run/netns/NAME), or a path such as /proc/PID/ns/net.
  // Throws a usage error when it is not a network namespace.
  static NetNamespace open(const std::string& name_or_path);

  int fd() const { return m_fd.get(); }
  const std::string& path() const { return m_path; }

  // Creates tap IFNAME in the namespace (or attaches to an existing persistent one), sets
  // it up, and returns one fd per queue.
  std::vector<Fd> open_tap(const std::string& ifname, size_t queues) const;

  // Kata's tcfilter interworking: the pod's interface IFACE and TAP each redirect their
  // ingress to the other's egress (tc u32 + mirred). The pod interface's old filter points
  // at the tap that died with the source VM, so it is replaced. Throws with tc's message.
  void connect_tc_redirect(const std::string& iface, const std::string& tap) const;

private:
  Fd m_fd;
  std::string m_path;
};

} // namespace ks
