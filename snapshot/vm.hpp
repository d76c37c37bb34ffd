// A running QEMU VM as kata-snapshot sees it: its QMP connection, pid and command line.
#pragma once

#include "qmp/qmp_client.hpp"
#include "snapshot/qemu_argv.hpp"

#include <optional>
#include <string>
#include <sys/types.h>

namespace ks {

inline constexpr const char* k_helper_port_name = "org.kata-snapshot.helper.0";

struct Vm {
  qmp::Client qmp;
  pid_t pid;
  QemuArgv argv;
};

// Connects to QMP_SOCKET and finds the QEMU process behind it (peer credentials).
Vm open_vm(const std::string& qmp_socket);

// The host socket of the helper's virtio-serial port, from the VM's command line.
std::optional<std::string> helper_socket_path(const QemuArgv& argv);

} // namespace ks
