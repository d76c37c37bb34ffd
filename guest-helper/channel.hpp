// Host side of the guest channel: talks the QEMU guest agent's JSON protocol to
// kata-snapshot-helper (or a real qemu-guest-agent) over the port's host chardev socket.
#pragma once

#include "util/deadline.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/line_socket.hpp"

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace ks::guest {

using Json = nlohmann::json;

class GuestError : public Error {
public:
  using Error::Error;
};

// The helper answered with an error: the command did not run (nothing to undo).
class GuestRefused : public GuestError {
public:
  using GuestError::GuestError;
};

class Channel {
public:
  static constexpr Millis k_default_timeout{5000};
  static constexpr Millis k_freeze_timeout{30000};

  // Connects to the chardev socket and resynchronises (guest-sync-delimited).
  static Channel connect(const std::string& socket_path, Millis timeout = k_default_timeout);

  // The same, over an already connected socket (LABEL names it in errors).
  static Channel over(Fd sock, std::string label, Millis timeout = k_default_timeout);

  // Runs COMMAND; returns "return" or throws GuestError naming the command and the cause.
  // IDLE, when set: the helper must send something at least this often (the reply, or the
  // blank lines of its heartbeat during a long command), else it is taken for dead.
  Json execute(const std::string& command, const Json& arguments = Json::object(),
               Millis timeout = k_default_timeout, Millis idle = Millis(0));

  // Runs COMMAND, whose reply {"bytes": N} is followed by N raw bytes (N at most MAX_BYTES),
  // handed to SINK as they come; IDLE bounds each wait for more. Returns the reply.
  using Sink = std::function<void(std::string_view)>;
  Json download(const std::string& command, const Json& arguments, uint64_t max_bytes, const Sink& sink,
                Millis idle = k_default_timeout);
  // Runs COMMAND followed by SIZE raw bytes that SOURCE fills in pieces (it returns how many
  // it put in); the reply comes once the helper has them all. TIMEOUT bounds the wait for it.
  using Source = std::function<size_t(std::span<char>)>;
  Json upload(const std::string& command, const Json& arguments, uint64_t size, const Source& source,
              Millis timeout = k_default_timeout);

  // 0xFF + guest-sync-delimited with a fresh id; discards everything up to the matching reply.
  // Sent again, with a new id, every 2 s without a reply until TIMEOUT.
  void resync(Millis timeout = k_default_timeout);

  // connect() then execute() in one exchange: the request follows the sync on the wire, so a
  // guest that has just been resumed answers both in one wake-up instead of two.
  static Json connect_and_execute(const std::string& socket_path, const std::string& command,
                                  const Json& arguments, Millis timeout = k_default_timeout);

private:
  Channel(Fd sock, std::string path) : m_sock(std::move(sock)), m_path(std::move(path)) {}
  void send_raw(std::string_view bytes);
  static std::string sync_request(int64_t id);
  static std::string command_request(const std::string& command, const Json& arguments);
  // True once the reply to sync ID came (anything before it skipped); false after TIMEOUT.
  bool await_sync(int64_t id, Millis timeout);
  Json await_reply(const std::string& command, Millis timeout, Millis idle = Millis(0));

  // Next line, or nullopt when DEADLINE passes first.
  std::optional<std::string> read_line(const Deadline& deadline, const std::string& command);

  Fd m_sock;
  std::string m_path;
  LineSocket m_lines{1 << 20};
};

} // namespace ks::guest
