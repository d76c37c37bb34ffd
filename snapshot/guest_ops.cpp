#include "snapshot/guest_ops.hpp"

#include "snapshot/vm.hpp"

namespace ks {

guest::Channel open_guest_channel(const GuestTarget& target) {
  Vm vm = open_vm(target.qmp_socket);
  auto path = helper_socket_path(vm.argv);
  if (!path) {
    throw Error("the VM behind " + target.qmp_socket + " has no virtio-serial port named " +
                  k_helper_port_name,
                ExitCode::failed,
                "add -device virtserialport,chardev=ID,name=" + std::string(k_helper_port_name) +
                  " with a -chardev socket,id=ID,path=...,server=on,wait=off");
  }
  return guest::Channel::connect(*path);
}

nlohmann::json guest_ping(const GuestTarget& target) {
  guest::Channel ch = open_guest_channel(target);
  ch.execute("guest-ping");
  nlohmann::json info = ch.execute("guest-info");
  return {{"status", "ok"}, {"version", info.value("version", "")}};
}

nlohmann::json guest_freeze(const GuestTarget& target, std::chrono::seconds auto_thaw) {
  guest::Channel ch = open_guest_channel(target);
  nlohmann::json n =
    ch.execute("guest-fsfreeze-freeze", {{"timeout", auto_thaw.count()}}, guest::Channel::k_freeze_timeout);
  return {{"status", "frozen"}, {"filesystems", n}};
}

nlohmann::json guest_thaw(const GuestTarget& target) {
  guest::Channel ch = open_guest_channel(target);
  nlohmann::json n = ch.execute("guest-fsfreeze-thaw");
  return {{"status", "thawed"}, {"filesystems", n}};
}

nlohmann::json guest_status(const GuestTarget& target) {
  guest::Channel ch = open_guest_channel(target);
  return {{"status", ch.execute("guest-fsfreeze-status")}};
}

} // namespace ks
