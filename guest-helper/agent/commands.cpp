#include "guest-helper/agent/commands.hpp"

#include "guest-helper/agent/freeze.hpp"
#include "guest-helper/agent/system.hpp"

#include <memory>
#include <stdexcept>

namespace ks::agent {

namespace {

struct CommandError {
  std::string error_class;
  std::string desc;
};

Json sync_id(const Json& args) {
  if (!args.contains("id") || !args["id"].is_number_integer()) {
    throw CommandError{"GenericError", "parameter 'id' is missing or not an integer"};
  }
  return args["id"];
}

int64_t time_arg(const Json& args) {
  if (!args.contains("time") || !args["time"].is_number_integer()) {
    throw CommandError{"GenericError", "parameter 'time' (nanoseconds since the epoch) is required"};
  }
  return args["time"].get<int64_t>();
}

Json error_reply(const std::string& cls, const std::string& desc) {
  return {{"error", {{"class", cls}, {"desc", desc}}}};
}

} // namespace

Effects system_effects(const std::string& state_file) {
  auto state = std::make_shared<FreezeState>(state_file);
  return {.freeze = [state](std::chrono::seconds t) { return state->freeze(t); },
          .thaw = [state] { return state->thaw(); },
          .frozen = [state] { return state->frozen(); },
          .set_clock = set_clock,
          .add_entropy = add_entropy,
          .reseed_crng = reseed_crng};
}

Agent::Agent(Effects effects) : m_fx(std::move(effects)) {
  m_commands = {
    {"guest-ping", {[](const Json&) { return Json::object(); }, true}},
    {"guest-info", {[this](const Json&) { return info(); }, true}},
    {"guest-sync", {sync_id, true}},
    {"guest-sync-delimited", {sync_id, true}},
    {"guest-fsfreeze-status",
     {[this](const Json&) { return Json(m_fx.frozen() ? "frozen" : "thawed"); }, true}},
    {"guest-fsfreeze-freeze",
     {[this](const Json& a) { return Json(m_fx.freeze(std::chrono::seconds(a.value("timeout", 60)))); },
      false}},
    {"guest-fsfreeze-thaw", {[this](const Json&) { return Json(m_fx.thaw()); }, true}},
    {"guest-set-time",
     {[this](const Json& a) {
        m_fx.set_clock(time_arg(a));
        return Json::object();
      },
      true}},
    {"kata-snapshot-post-restore", {[this](const Json& a) { return post_restore(a); }, true}},
  };
}

Json Agent::info() const {
  Json supported = Json::array();
  for (const auto& [name, cmd] : m_commands) {
    supported.push_back({{"name", name}, {"enabled", true}, {"success-response", true}});
  }
  return {{"version", k_version}, {"supported_commands", supported}};
}

// After a restore: thaw (the snapshot may have been taken frozen), set the clock from the
// host, add host entropy and force a CRNG reseed so the copy does not repeat the original's
// random numbers.
Json Agent::post_restore(const Json& a) {
  int thawed = m_fx.thaw();
  int64_t delta_ns = m_fx.set_clock(time_arg(a));
  std::string entropy = decode_base64(a.value("entropy", ""));
  if (entropy.size() < 16) {
    throw CommandError{"GenericError", "parameter 'entropy' must carry at least 16 bytes (base64)"};
  }
  m_fx.add_entropy(entropy);
  return {{"thawed", thawed},
          {"clock_set", true},
          {"clock_delta_ms", delta_ns / 1000000},
          {"entropy_bytes", entropy.size()},
          {"crng_reseeded", m_fx.reseed_crng()}};
}

Json Agent::handle(const Json& request, bool& send_delimiter) {
  send_delimiter = false;
  Json reply;
  if (!request.is_object() || !request.contains("execute") || !request["execute"].is_string()) {
    reply = error_reply("GenericError", "expected {\"execute\": NAME}");
  } else {
    const std::string name = request["execute"];
    auto it = m_commands.find(name);
    if (it == m_commands.end()) {
      reply = error_reply("CommandNotFound", "unknown command " + name);
    } else if (!it->second.safe_while_frozen && m_fx.frozen()) {
      reply = error_reply("GenericError", name + " is not allowed while the guest's filesystems are frozen");
    } else {
      try {
        reply = {{"return", it->second.run(request.value("arguments", Json::object()))}};
        send_delimiter = name == "guest-sync-delimited";
      } catch (const CommandError& e) {
        reply = error_reply(e.error_class, e.desc);
      } catch (const std::exception& e) {
        reply = error_reply("GenericError", e.what());
      }
    }
  }
  if (request.is_object() && request.contains("id")) {
    reply["id"] = request["id"];
  }
  return reply;
}

void Agent::feed(std::string_view data, const std::function<void(const std::string&)>& reply) {
  for (char c : data) {
    if (static_cast<unsigned char>(c) == 0xff) {
      m_line.clear();
    } else if (c == '\n') {
      if (m_line.find_first_not_of(" \t\r") != std::string::npos) {
        Json request = Json::parse(m_line, nullptr, false);
        bool delimiter = false;
        Json answer =
          request.is_discarded() ? error_reply("GenericError", "invalid JSON") : handle(request, delimiter);
        reply((delimiter ? std::string(1, '\xff') : std::string()) +
              answer.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n");
      }
      m_line.clear();
    } else if (m_line.size() < (1u << 20)) {
      m_line += c;
    }
  }
}

} // namespace ks::agent
