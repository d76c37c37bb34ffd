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
};

struct RewriteResult {
  QemuArgv argv;
  std::map<std::string, std::string> sockets; // chardev id -> new socket path
};

RewriteResult rewrite_for_restore(const QemuArgv& recorded, const RewriteOptions& options);

} // namespace ks
