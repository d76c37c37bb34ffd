#include "guest-helper/agent/commands.hpp"

#include <functional>
#include <map>

namespace ks::agent {

namespace {

using Handler = std::function<Json(const Json& args)>;

struct CommandError {
  std::string error_class;
  std::string desc;
};

const std::map<std::string, Handler>& command_table();

Json guest_info(const Json&) {
  Json supported = Json::array();
  for (const auto& [name, handler] : command_table()) {
    supported.push_back({{"name", name}, {"enabled", true}, {"success-response", true}});
  }
  return {{"version", k_version}, {"supported_commands", supported}};
}

Json guest_sync(const Json& args) {
  if (!args.contains("id") || !args["id"].is_number_integer()) {
    throw CommandError{"GenericError", "parameter 'id' is missing or not an integer"};
  }
  return args["id"];
}

const std::map<std::string, Handler>& command_table() {
  static const std::map<std::string, Handler> table = {
    {"guest-ping", [](const Json&) { return Json::object(); }},
    {"guest-info", guest_info},
    {"guest-sync", guest_sync},
    {"guest-sync-delimited", guest_sync},
  };
  return table;
}

} // namespace

Json handle_request(const Json& request, bool& send_delimiter) {
  send_delimiter = false;
  Json reply;
  if (!request.is_object() || !request.contains("execute") || !request["execute"].is_string()) {
    reply = {{"error", {{"class", "GenericError"}, {"desc", "expected {\"execute\": NAME}"}}}};
  } else {
    const std::string name = request["execute"];
    const auto& table = command_table();
    auto it = table.find(name);
    if (it == table.end()) {
      reply = {{"error", {{"class", "CommandNotFound"}, {"desc", "unknown command " + name}}}};
    } else {
      try {
        reply = {{"return", it->second(request.value("arguments", Json::object()))}};
        send_delimiter = name == "guest-sync-delimited";
      } catch (const CommandError& e) {
        reply = {{"error", {{"class", e.error_class}, {"desc", e.desc}}}};
      } catch (const std::exception& e) {
        reply = {{"error", {{"class", "GenericError"}, {"desc", e.what()}}}};
      }
    }
  }
  if (request.is_object() && request.contains("id")) {
    reply["id"] = request["id"];
  }
  return reply;
}

} // namespace ks::agent
