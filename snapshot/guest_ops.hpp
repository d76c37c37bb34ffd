// Guest-helper operations on a running VM, for `kata-snapshot guest` and for save/load.
#pragma once

#include "guest-helper/channel.hpp"

#include <chrono>
#include <string>

namespace ks {

struct GuestTarget {
  std::string qmp_socket;
};

// Connects to the VM's helper port (found from its command line).
guest::Channel open_guest_channel(const GuestTarget& target);

nlohmann::json guest_ping(const GuestTarget& target);
nlohmann::json guest_freeze(const GuestTarget& target, std::chrono::seconds auto_thaw);
nlohmann::json guest_thaw(const GuestTarget& target);
nlohmann::json guest_status(const GuestTarget& target);

} // namespace ks
