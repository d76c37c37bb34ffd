#include "snapshot/vm.hpp"

namespace ks {

Vm open_vm(const std::string& qmp_socket) {
  qmp::Client client = qmp::Client::connect(qmp_socket);
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
