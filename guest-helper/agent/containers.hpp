// Container mode inside the guest: finding a container as Kata's agent lays it out, checking
// what CRIU needs, and checkpointing and restoring it with CRIU (docs/containers.md).
#pragma once

#include "guest-helper/agent/commands.hpp"

#include <sys/types.h>
#include <vector>

namespace ks::agent {

// What stands in the way, and how to fix it (empty when unknown).
struct Problem {
  std::string what;
  std::string fix;
};

// Where the guest keeps things. Unit tests point these at a fake tree.
struct GuestPaths {
  std::string containers = "/run/kata-containers"; // the agent's bundles: CID/config.json, CID/rootfs
  std::string cgroup_root = "/sys/fs/cgroup";      // cgroup v2
  std::string proc = "/proc";
  std::string sys_module = "/sys/module";
  std::string net = "/sys/class/net";
  std::string work = "/run/kata-snapshot"; // checkpoint images, on the guest's tmpfs
  std::vector<std::string> criu = {"/usr/sbin/criu", "/usr/bin/criu", "/usr/local/sbin/criu", "/sbin/criu"};
  std::vector<std::string> path = {"/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"};
};

// Kernel modules CRIU 4.x loads nothing without (socket diagnostics, nftables for the network
// lock), in the order they load without modprobe.
inline const std::vector<std::string> k_criu_modules = {
  "crc32c_generic", "libcrc32c", "nfnetlink", "nf_tables",      "unix_diag",
  "inet_diag",      "tcp_diag",  "udp_diag",  "af_packet_diag", "netlink_diag"};

struct Container {
  std::string id;
  std::string bundle; // PATHS.containers/ID
  std::string rootfs;
  std::string cgroup; // its cgroup directory
  Json spec;          // config.json
  std::vector<pid_t> pids;
  pid_t init = 0; // pid 1 of its pid namespace, as this helper sees it
  bool frozen = false;
  std::string state() const { return pids.empty() ? "stopped" : frozen ? "paused" : "running"; }
};

// The ids of the containers with a bundle, sorted.
std::vector<std::string> container_ids(const GuestPaths& paths);

// Container ID, read from its bundle, cgroup and /proc. Throws when it has no bundle.
Container find_container(const GuestPaths& paths, const std::string& id);

// What keeps CRIU from running in this guest at all.
std::vector<Problem> criu_problems(const GuestPaths& paths);

// What keeps container C from being checkpointed (CRIU's own problems aside).
std::vector<Problem> container_problems(const GuestPaths& paths, const Container& c);

// A name CRIU gives an image file: letters, digits, '.', '_', '-'; no path.
bool valid_image_name(const std::string& name);

// The real container operations (guest-helper/agent/criu.cpp).
std::shared_ptr<ContainerOps> system_containers(GuestPaths paths = {});

// Small pieces both files use. Up to MAX bytes of file PATH ("" when it cannot be read).
std::string slurp(const std::string& path, uint64_t max = 1u << 20);
std::string trim(std::string s); // without trailing newlines and spaces
// Throws what the host shows: "WHAT; FIX".
[[noreturn]] void fail(const std::string& what, const std::string& fix = {});
bool write_text(const std::string& path, const std::string& text);
// A cgroup v2 group's freezer: set, waiting until cgroup.events agrees; and read.
bool set_frozen(const std::string& cgroup, bool frozen);
bool is_frozen(const std::string& cgroup);
// CRIU's binary, or "" when there is none.
std::string criu_path(const GuestPaths& paths);

} // namespace ks::agent
