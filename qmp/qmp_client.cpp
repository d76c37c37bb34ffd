#include "qmp/qmp_client.hpp"

#include "util/unix_socket.hpp"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <unistd.h>

namespace ks::qmp {

namespace {

const char* k_busy_hint =
  "QEMU serves one QMP client per socket; for a Kata sandbox the shim holds qmp.sock: set "
  "extra_monitor_socket = \"qmp\" in Kata's configuration.toml ([hypervisor.qemu]) and use "
  "extra-monitor.sock";

} // namespace

Client Client::connect(const std::string& path, Millis timeout) {
  Deadline deadline(timeout);
  return over(connect_unix(path, deadline), path, timeout);
}

Client Client::over(Fd sock, const std::string& path, Millis timeout) {
  Client c(std::move(sock), path);
  // A held socket answers connect() (kernel backlog) but QEMU never greets us.
  Deadline greet_deadline(std::min(timeout, Millis(3000)));
  auto greeting = c.read_message(greet_deadline);
  // QEMU keeps monitor output the previous client did not read: an event queued just before
  // that client went away reaches us ahead of the greeting.
  while (greeting && greeting->contains("event") && !greeting->contains("QMP")) {
    greeting = c.read_message(greet_deadline);
  }
  if (!greeting) {

    throw MonitorBusy("no QMP greeting on " + path + " within " +
                        std::to_string(std::min(timeout, Millis(3000)).count() / 1000) +
                        " s: the socket is held by another client or is not a QMP monitor",
                      ExitCode::failed, k_busy_hint);
  }
  if (!greeting->contains("QMP")) {
    throw Error(path + " does not speak QMP: its first message was " +
                greeting->dump(-1, ' ', false, Json::error_handler_t::replace).substr(0, 200));
  }
  c.m_greeting = (*greeting)["QMP"];
  c.execute("qmp_capabilities", Json::object(), timeout);
  return c;
}

Json Client::execute(const std::string& command, const Json& arguments, Millis timeout) {
  return roundtrip(command, arguments, -1, timeout);
}

Json Client::execute_with_fd(const std::string& command, const Json& arguments, int fd, Millis timeout) {
  return roundtrip(command, arguments, fd, timeout);
}

pid_t Client::peer_pid() const {
  return ks::peer_pid(m_sock.get());
}

void Client::send_fd(const std::string& name, int fd) {
  execute_with_fd("getfd", {{"fdname", name}}, fd);
}

Json Client::roundtrip(const std::string& command, const Json& arguments, int fd, Millis timeout) {
  if (!m_sock) {
    throw Error("QMP connection to " + m_path + " is closed");
  }
  uint64_t id = m_next_id++;
  Json request = {{"execute", command}, {"id", id}};
  if (!arguments.empty()) {
    request["arguments"] = arguments;
  }
  std::string line = request.dump() + "\n";
  if (fd >= 0) {
    send_with_fd(m_sock.get(), line, fd);
  } else {
    ssize_t n;
    do {
      n = ::send(m_sock.get(), line.data(), line.size(), MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(line.size())) {
      throw_errno("failed to send " + command + " to QEMU (" + m_path + ")");
    }
  }
  Deadline deadline(timeout);
  for (;;) {
    auto msg = read_message(deadline);
    if (!msg) {
      throw Error("QEMU did not answer " + command + " within " + std::to_string(timeout.count()) + " ms (" +
                  m_path + ")");
    }
    if (msg->contains("event")) {
      buffer_event(*msg);
      continue;
    }
    if (!msg->contains("id") || (*msg)["id"] != id) {
      continue; // A reply to an earlier request that timed out.
    }
    if (msg->contains("error")) {
      const Json& e = (*msg)["error"];
      throw CommandError(command, e.value("class", "GenericError"), e.value("desc", "unknown"));
    }
    if (!msg->contains("return")) {
      throw Error("QEMU sent a reply to " + command + " without \"return\": " + msg->dump().substr(0, 200));
    }
    return (*msg)["return"];
  }
}

std::optional<Event> Client::wait_event(const std::string& name, const std::function<bool(const Json&)>& pred,
                                        Millis timeout) {
  auto matches = [&](const Event& e) { return e.name == name && (!pred || pred(e.data)); };
  for (auto it = m_events.begin(); it != m_events.end(); ++it) {
    if (matches(*it)) {
      Event e = std::move(*it);
      m_events.erase(it);
      return e;
    }
  }
  Deadline deadline(timeout);
  for (;;) {
    auto msg = read_message(deadline);
    if (!msg) {
      return std::nullopt;
    }
    if (!msg->contains("event")) {
      continue;
    }
    Event e{(*msg)["event"].get<std::string>(), msg->value("data", Json::object())};
    if (matches(e)) {
      return e;
    }
    m_events.push_back(std::move(e));
  }
}

void Client::buffer_event(const Json& message) {
  m_events.push_back({message["event"].get<std::string>(), message.value("data", Json::object())});
  if (m_events.size() > 1000) {
    m_events.pop_front(); // Nobody waits for old events; bound the memory.
  }
}

std::optional<Json> Client::read_message(const Deadline& deadline) {
  for (;;) {
    auto line = read_line(deadline);
    if (!line) {
      return std::nullopt;
    }
    if (line->find_first_not_of(" \t\r") == std::string::npos) {
      continue;
    }
    Json msg = Json::parse(*line, nullptr, false);
    if (msg.is_discarded() || !msg.is_object()) {
      m_sock.reset();
      throw Error("garbled QMP message from " + m_path + ": " + line->substr(0, 120));
    }
    return msg;
  }
}

std::optional<std::string> Client::read_line(const Deadline& deadline) {
  if (!m_sock) {
    throw Error("QMP connection to " + m_path + " is closed");
  }
  std::string line;
  int err = 0;
  switch (m_lines.read_line(m_sock.get(), deadline, line, err)) {
  case LineSocket::Status::line:
    return line;
  case LineSocket::Status::timeout:
    return std::nullopt;
  case LineSocket::Status::too_long:
    m_sock.reset();
    throw Error("QMP message from " + m_path + " is larger than " + std::to_string(k_max_line >> 20) +
                " MiB");
  case LineSocket::Status::closed:
    break;
  }
  m_sock.reset();
  throw Error("QMP connection to " + m_path + " closed by QEMU" +
              (err ? std::string(": ") + std::strerror(err) : std::string()) +
              " (QEMU exited or dropped the client)");
}

} // namespace ks::qmp
