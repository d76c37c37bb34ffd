// Finding and holding the helper's virtio-serial port inside the guest (no udev needed).
#pragma once

#include <string>

namespace ks::agent {

inline constexpr const char* k_port_name = "org.kata-snapshot.helper.0";

// /dev path of the virtio-serial port named NAME, from /sys/class/virtio-ports/*/name;
// empty when there is none (yet: it may be hot-added).
std::string find_port(const std::string& name);

} // namespace ks::agent
