// Guest-helper operations on a running VM, for `kata-snapshot guest` and for save/load.
#pragma once

#include "guest-helper/channel.hpp"
#include "snapshot/vm.hpp"

#include <chrono>
#include <optional>
#include <string>

namespace ks {

struct GuestTarget {
  std::string qmp_socket;
};

// A channel to the VM's helper. When the VM has a virtio-serial bus but no helper port, one is
// hot-added (chardev-add + device_add virtserialport) and removed again at destruction
// (device_del, DEVICE_DELETED, chardev-remove), so the VM's device set ends as it started.
class GuestSession {
public:
  explicit GuestSession(const GuestTarget& target);
  ~GuestSession();
  GuestSession(const GuestSession&) = delete;
  GuestSession& operator=(const GuestSession&) = delete;

  guest::Channel& channel() { return *m_channel; }
  const Vm& vm() const { return m_vm; }
  Vm& vm() { return m_vm; }
  bool hot_added() const { return m_hot_added; }

private:
  void hot_add();
  void remove_hot_added() noexcept;

  Vm m_vm;
  std::optional<guest::Channel> m_channel;
  bool m_hot_added = false;
  std::string m_socket_dir;
};

nlohmann::json guest_ping(const GuestTarget& target);
nlohmann::json guest_freeze(const GuestTarget& target, std::chrono::seconds auto_thaw);
nlohmann::json guest_thaw(const GuestTarget& target);
nlohmann::json guest_status(const GuestTarget& target);
// What load does after cont: thaw, set the clock from the host, add host entropy and
// reseed (for a VM loaded with --paused, once it runs).
nlohmann::json guest_refresh(const GuestTarget& target);

} // namespace ks
