// A QMP client over a UNIX socket: greeting, capabilities, commands with deadlines,
// buffered events, and file-descriptor passing.
#pragma once

#include "util/deadline.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/line_socket.hpp"

#include <deque>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <sys/types.h>

namespace ks::qmp {

using Json = nlohmann::json;

// QEMU refused a command: carries QEMU's error class and description.
class CommandError : public Error {
public:
  CommandError(const std::string& command, std::string error_class, std::string desc)
    : Error("QEMU refused " + command + ": " + desc), m_class(std::move(error_class)),
      m_desc(std::move(desc)) {}
  const std::string& error_class() const { return m_class; }
  const std::string& desc() const { return m_desc; }

private:
  std::string m_class;
  std::string m_desc;
};

// The socket accepted the connection but QEMU never greeted: another client holds the monitor
// (QEMU serves one at a time; Kata's shim holds qmp.sock).
class MonitorBusy : public Error {
public:
  using Error::Error;
};

struct Event {

  std::string name;
  Json data;
};

class Client {
public:
  static constexpr size_t k_max_line = 16 * 1024 * 1024;
  static constexpr Millis k_default_timeout{10000};

  // Connects, reads the greeting and negotiates capabilities. A socket that accepts but
  // never greets is taken to be held by another client (QEMU serves one at a time).
  static Client connect(const std::string& path, Millis timeout = k_default_timeout);
  // The same over a socket already connected (PATH names it in errors).
  static Client over(Fd sock, const std::string& path, Millis timeout = k_default_timeout);

  // Runs COMMAND; returns its "return" value or throws CommandError / Error.
  Json execute(const std::string& command, const Json& arguments = Json::object(),
               Millis timeout = k_default_timeout);

  // Like execute, with FD passed alongside (SCM_RIGHTS), as getfd and add-fd need.
  Json execute_with_fd(const std::string& command, const Json& arguments, int fd,
                       Millis timeout = k_default_timeout);

  // Passes FD to QEMU under NAME (getfd), for URIs such as "fd:NAME".
  void send_fd(const std::string& name, int fd);

  // Returns the first event named NAME (buffered or new) that PRED accepts, or nullopt.
  std::optional<Event> wait_event(const std::string& name, const std::function<bool(const Json&)>& pred,
                                  Millis timeout);

  const Json& greeting() const { return m_greeting; }
  // The pid of the QEMU process at the other end of the socket, or -1.
  pid_t peer_pid() const;
  const std::string& path() const { return m_path; }

private:
  Client(Fd sock, std::string path) : m_sock(std::move(sock)), m_path(std::move(path)) {}

  Json roundtrip(const std::string& command, const Json& arguments, int fd, Millis timeout);
  // Next JSON message from the socket; nullopt when the deadline passes.
  std::optional<Json> read_message(const Deadline& deadline);
  std::optional<std::string> read_line(const Deadline& deadline);
  void buffer_event(const Json& message);

  Fd m_sock;
  std::string m_path;
  LineSocket m_lines{k_max_line};
  std::deque<Event> m_events;
  Json m_greeting;
  uint64_t m_next_id = 1;
};

} // namespace ks::qmp
