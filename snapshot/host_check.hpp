// Can this host load a snapshot? QEMU binary, version and machine type.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ks {

struct HostCheck {
  std::string qemu;                  // the binary that would be used
  std::string qemu_version;          // what it reports
  std::vector<std::string> problems; // empty: loadable here
  nlohmann::json to_json() const;
};

// QEMU_OVERRIDE: --qemu PATH, or empty for the recorded binary (or qemu-system-x86_64).
HostCheck check_host(const nlohmann::json& manifest, const std::string& qemu_override);

// The binary check_host() looks at: QEMU_OVERRIDE, else the recorded one if it is there.
std::string qemu_binary(const nlohmann::json& manifest, const std::string& qemu_override);

// Throws Error(exit 3) listing the problems, if any.
void require_loadable(const HostCheck& check);

// "10.0.2" -> {10, 0, 2}; missing parts are 0.
std::vector<int> parse_version(const std::string& text);

} // namespace ks
