// The helper's commands: the QEMU guest agent's JSON protocol plus kata-snapshot's own
// post-restore command (docs/guest-helper-protocol.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace ks::agent {

using Json = nlohmann::json;

inline constexpr const char* k_version = "0.2.0";

// What the commands do to the system. The helper uses the real ones (system_effects());
// the fuzz target substitutes inert ones, so that no input freezes or re-clocks its host.
struct Effects {
  std::function<int(std::chrono::seconds auto_thaw)> freeze; // filesystems frozen
  std::function<int()> thaw;                                 // filesystems thawed
  std::function<bool()> frozen;
  std::function<int64_t(int64_t ns)> set_clock; // the correction applied
  std::function<void(const std::string&)> add_entropy;
  std::function<bool()> reseed_crng;
};

// The real effects; the freeze state is kept in STATE_FILE.
Effects system_effects(const std::string& state_file);

class Agent {
public:
  explicit Agent(Effects effects);

  // Handles one request; returns {"return": ..} or {"error": ..} with "id" copied over.
  // SEND_DELIMITER is set when the reply must be preceded by 0xFF (guest-sync-delimited).
  Json handle(const Json& request, bool& send_delimiter);

  // Feeds bytes read from the port: each whole line is a request, answered through REPLY
  // (the reply's bytes, the 0xFF delimiter included); 0xFF discards a partial line (the
  // host's resync). Lines longer than 1 MiB are cut.
  void feed(std::string_view data, const std::function<void(const std::string&)>& reply);

private:
  using Handler = std::function<Json(const Json& args)>;
  struct Command {
    Handler run;
    bool safe_while_frozen;
  };

  Json info() const;
  Json post_restore(const Json& args);

  Effects m_fx;
  std::map<std::string, Command> m_commands;
  std::string m_line;
};

} // namespace ks::agent
