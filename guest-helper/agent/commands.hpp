// The helper's command table: QEMU guest agent JSON in, JSON out.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace ks::agent {

using Json = nlohmann::json;

inline constexpr const char* k_version = "0.1.0";

// Handles one request object; returns the reply object ({"return":..} or {"error":..}),
// with "id" copied over. SEND_DELIMITER is set when the reply must be preceded by 0xFF
// (guest-sync-delimited).
Json handle_request(const Json& request, bool& send_delimiter);

} // namespace ks::agent
