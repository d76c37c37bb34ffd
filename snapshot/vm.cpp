#include "snapshot/vm.hpp"

#include "util/unix_socket.hpp"

#include <cstdio>

namespace ks {

Vm open_vm(const std::string& qmp_socket) {
  qmp::Client client = qmp::Client::connect(qmp_socket);
  if (std::string who = socket_exposure(qmp_socket); !who.empty()) {
    std::fprintf(stderr,
                 "kata-snapshot: warning: %s can connect to the QMP socket %s, and QMP controls the whole VM "
                 "(hint: make it 0600, or put it in a directory only its owner can enter)\n",
                 who.c_str(), qmp_socket.c_str());
  }
  pid_t pid = client.peer_pid();
  if (pid <= 0) {
    throw Error("cannot find the QEMU process behind " + qmp_socket +
                ": the socket reports no peer credentials");
  }
  QemuArgv argv(read_proc_cmdline(pid));
  return Vm{std::move(client), pid, std::move(argv)};
}

std::optional<std::string> helper_socket_path(const QemuArgv& argv) {
  for (const auto& dev : argv.all("device")) {
    if (dev.driver() == "virtserialport" && dev.get("name") == k_helper_port_name) {
      if (auto chardev = dev.get("chardev")) {
        return argv.chardev_socket_path(*chardev);
      }
    }
  }
  return std::nullopt;
}

} // namespace ks
