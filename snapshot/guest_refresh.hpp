// After a restore: the guest's clock is hours behind and its RNG state is a copy. The helper
// sets the clock from the host and mixes in fresh host entropy.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace ks {

// HELPER_SOCKET: the restored VM's helper chardev socket, if it has one. Never throws: the
// report says what was done or why not.
nlohmann::json refresh_guest(const std::optional<std::string>& helper_socket);

// The arguments of kata-snapshot-post-restore: the host's time now and fresh host entropy.
nlohmann::json post_restore_arguments();

} // namespace ks
