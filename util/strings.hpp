// Small string helpers used across the project.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ks {

std::vector<std::string> split(std::string_view s, char sep);
std::string join(const std::vector<std::string>& parts, std::string_view sep);
std::string trim(std::string_view s);
std::string lowercase(std::string_view s); // ASCII only

// "1.5 GiB"-style size.
std::string human_size(uint64_t bytes);

// The time now in UTC, as strftime(3) FORMAT writes it ("%Y-%m-%dT%H:%M:%SZ").
std::string utc_now_as(const char* format);

} // namespace ks
