#include "guest-helper/agent/commands.hpp"

#include "guest-helper/agent/containers.hpp"
#include "guest-helper/agent/freeze.hpp"
#include "guest-helper/agent/system.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <unistd.h>

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

std::string string_arg(const Json& args, const char* name) {
  if (!args.contains(name) || !args[name].is_string() || args[name].get<std::string>().empty()) {
    throw CommandError{"GenericError", std::string("parameter '") + name + "' (a string) is required"};
  }
  return args[name];
}

uint64_t size_arg(const Json& args, const char* name) {
  if (!args.contains(name) || !args[name].is_number_unsigned()) {
    throw CommandError{"GenericError", std::string("parameter '") + name + "' (a byte count) is required"};
  }
  return args[name];
}

constexpr size_t k_piece = size_t{256} * 1024;

} // namespace

Effects system_effects(const std::string& state_file) {
  auto state = std::make_shared<FreezeState>(state_file);
  return {.freeze = [state](std::chrono::seconds t) { return state->freeze(t); },
          .thaw = [state] { return state->thaw(); },
          .frozen = [state] { return state->frozen(); },
          .set_clock = set_clock,
          .add_entropy = add_entropy,
          .reseed_crng = reseed_crng,
          .containers = system_containers()};
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
  add_container_commands();
}

ContainerOps::Heartbeat Agent::heartbeat() const {
  return [this] {
    if (m_reply) {
      (*m_reply)("\n");
    }
  };
}

ContainerOps& Agent::containers() const {
  if (!m_fx.containers) {
    throw CommandError{"GenericError", "container mode is not supported by this helper"};
  }
  return *m_fx.containers;
}

// None of these may run while the guest's filesystems are frozen: CRIU writes its images.
void Agent::add_container_commands() {
  m_commands["kata-snapshot-containers"] = {[this](const Json&) { return containers().list(); }, false};
  m_commands["kata-snapshot-container-dump"] = {
    [this](const Json& a) {
      std::string after = a.value("after", "resume");
      if (after != "resume" && after != "pause" && after != "hold") {
        throw CommandError{"GenericError", "parameter 'after' must be resume, pause or hold"};
      }
      int64_t hold = a.value("hold_seconds", 120);
      if (hold < 1 || hold > 3600) {
        throw CommandError{"GenericError", "parameter 'hold_seconds' must be 1 to 3600"};
      }
      return containers().dump(string_arg(a, "id"), after, std::chrono::seconds(hold), heartbeat());
    },
    false};
  m_commands["kata-snapshot-container-finish"] = {
    [this](const Json& a) {
      std::string action = string_arg(a, "action");
      if (action != "kill" && action != "resume") {
        throw CommandError{"GenericError", "parameter 'action' must be kill or resume"};
      }
      return containers().finish(string_arg(a, "id"), action);
    },
    false};
  m_commands["kata-snapshot-container-send"] = {[this](const Json& a) {
                                                  Transfer t;
                                                  t.fd = containers().open_image(
                                                    string_arg(a, "id"), string_arg(a, "name"), t.total);
                                                  t.left = t.total;
                                                  m_send = std::move(t);
                                                  return Json{{"bytes", m_send->total}};
                                                },
                                                false};
  m_commands["kata-snapshot-container-receive"] = {[this](const Json& a) {
                                                     Transfer t;
                                                     t.total = t.left = size_arg(a, "bytes");
                                                     // Refused or not, the announced bytes are read: they
                                                     // must not be taken for requests.
                                                     try {
                                                       t.fd = containers().create_image(
                                                         string_arg(a, "id"), string_arg(a, "name"), t.total);
                                                     } catch (const std::exception& e) {
                                                       t.error = e.what();
                                                     }
                                                     m_receive = std::move(t);
                                                     return Json(); // answered once the bytes are in
                                                   },
                                                   false};
  m_commands["kata-snapshot-container-restore"] = {
    [this](const Json& a) { return containers().restore(string_arg(a, "id"), heartbeat()); }, false};
  m_commands["kata-snapshot-container-discard"] = {
    [this](const Json& a) { return containers().discard(string_arg(a, "id")); }, false};
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

void Agent::request(const std::string& line, const Reply& reply) {
  Json req = Json::parse(line, nullptr, false);
  bool delimiter = false;
  m_reply = &reply;
  Json answer = req.is_discarded() ? error_reply("GenericError", "invalid JSON") : handle(req, delimiter);
  m_reply = nullptr;
  if (m_receive) {
    m_receive->id = answer.value("id", Json());
    if (m_receive->left == 0) {
      receive({}, reply);
    }
    return;
  }
  reply((delimiter ? std::string(1, '\xff') : std::string()) +
        answer.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n");
  if (!m_send) {
    return;
  }
  std::string buf(k_piece, '\0');
  while (m_send->left > 0) {
    ssize_t n = ::read(m_send->fd, buf.data(), std::min<uint64_t>(buf.size(), m_send->left));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      // The image shrank under us: pad, so the host reads what was announced, and fails
      // its hash check.
      buf.assign(buf.size(), '\0');
      n = static_cast<ssize_t>(std::min<uint64_t>(buf.size(), m_send->left));
    }
    reply(std::string_view(buf.data(), static_cast<size_t>(n)));
    m_send->left -= static_cast<uint64_t>(n);
  }
  end_transfer(m_send);
}

size_t Agent::receive(std::string_view data, const Reply& reply) {
  Transfer& t = *m_receive;
  size_t take = static_cast<size_t>(std::min<uint64_t>(t.left, data.size()));
  for (size_t done = 0; done < take && t.error.empty();) {
    ssize_t n = ::write(t.fd, data.data() + done, take - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      t.error = std::string("writing the image failed: ") + std::strerror(errno);
      break;
    }
    done += static_cast<size_t>(n);
  }
  t.left -= take;
  if (t.left == 0) {
    Json answer =
      t.error.empty() ? Json{{"return", {{"bytes", t.total}}}} : error_reply("GenericError", t.error);
    if (!t.id.is_null()) {
      answer["id"] = t.id;
    }
    end_transfer(m_receive);
    reply(answer.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n");
  }
  return take;
}

void Agent::end_transfer(std::optional<Transfer>& t) {
  if (t && t->fd >= 0) {
    ::close(t->fd);
  }
  t.reset();
}

void Agent::reset() {
  end_transfer(m_send);
  end_transfer(m_receive);
  m_line.clear();
  if (m_fx.containers) {
    m_fx.containers->host_gone();
  }
}

void Agent::feed(std::string_view data, const Reply& reply) {
  while (!data.empty()) {
    if (m_receive) {
      data.remove_prefix(receive(data, reply));
      continue;
    }
    char c = data.front();
    data.remove_prefix(1);
    if (static_cast<unsigned char>(c) == 0xff) {
      m_line.clear();
    } else if (c == '\n') {
      if (m_line.find_first_not_of(" \t\r") != std::string::npos) {
        request(m_line, reply);
      }
      m_line.clear();
    } else if (m_line.size() < (1u << 20)) {
      m_line += c;
    }
  }
}

} // namespace ks::agent
