// The helper's commands: the QEMU guest agent's JSON protocol plus kata-snapshot's own
// post-restore command (docs/guest-helper-protocol.md).
#pragma once

#include "guest-helper/agent/freeze.hpp"

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace ks::agent {

using Json = nlohmann::json;

inline constexpr const char* k_version = "0.2.0";

class Agent {
public:
  explicit Agent(const std::string& state_file);

  // Handles one request; returns {"return": ..} or {"error": ..} with "id" copied over.
  // SEND_DELIMITER is set when the reply must be preceded by 0xFF (guest-sync-delimited).
  Json handle(const Json& request, bool& send_delimiter);

private:
  using Handler = std::function<Json(const Json& args)>;
  struct Command {
    Handler run;
    bool safe_while_frozen;
  };

  Json info() const;
  Json post_restore(const Json& args);

  FreezeState m_freeze;
  std::map<std::string, Command> m_commands;
};

} // namespace ks::agent
