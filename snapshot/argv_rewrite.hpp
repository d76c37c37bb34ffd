// Turning a recorded QEMU command line into one that starts an empty VM ready to receive the
// snapshot: new run directory for sockets and pid file, -S -incoming defer, and refusals
// for inherited file descriptors that cannot be re-created.
#pragma once

#include "snapshot/qemu_argv.hpp"

#include <map>
#include <string>

namespace ks {

struct RewriteOptions {
  std::string run_dir;
  std::string qmp_socket;                           // where the new QMP socket goes
  std::map<std::string, std::string> chardev_paths; // chardev id -> forced socket path
  // Tap netdevs re-created by load: netdev id -> the fds (one per queue) the new QEMU inherits.
  std::map<std::string, std::vector<int>> tap_fds;
  bool vhost_net = false; // this host has a usable /dev/vhost-net
  // The exact machine type the stream was made with, pinned over -machine (an alias like
  // "q35" may mean a newer, incompatible type on a newer QEMU); empty: -machine as recorded.
  std::string machine;
  // A new guest name for -name (load --sandbox ID names it sandbox-ID); empty: as recorded.
  std::string name;
};

struct RewriteResult {
  QemuArgv argv;
  std::map<std::string, std::string> sockets; // chardev id -> new socket path
  std::vector<std::string> warnings;          // changes the guest may notice or the operator should know
};

RewriteResult rewrite_for_restore(const QemuArgv& recorded, const RewriteOptions& options);

} // namespace ks
