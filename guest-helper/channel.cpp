#include "guest-helper/channel.hpp"

#include "util/unix_socket.hpp"

#include <algorithm>
#include <cerrno>
#include <poll.h>
#include <random>
#include <sys/socket.h>

namespace ks::guest {

namespace {

std::string seconds(Millis t) {
  return std::to_string((t.count() + 999) / 1000) + " s";
}

// Raw transfers move in pieces of this size.
constexpr size_t k_raw_piece = size_t{256} * 1024;

// How long a sync waits for its reply before it is sent again.
constexpr Millis k_sync_retry(2000);

// How long a write may make no progress before the helper is taken for stuck.
constexpr Millis k_send_idle(15000);

int64_t fresh_sync_id() {
  static std::mt19937_64 rng{std::random_device{}()};
  return static_cast<int64_t>(rng() >> 2);
}

} // namespace

Channel Channel::connect(const std::string& socket_path, Millis timeout) {
  Channel c(connect_unix(socket_path, Deadline(timeout)), socket_path);
  c.resync(timeout);
  return c;
}

Channel Channel::over(Fd sock, std::string label, Millis timeout) {
  Channel c(std::move(sock), std::move(label));
  c.resync(timeout);
  return c;
}

// Never blocks for good: QEMU stops reading the chardev while the guest's port has no room
// (a helper that stopped reading), and a blocking send would then wait past every deadline.
void Channel::send_raw(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(m_sock.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{m_sock.get(), POLLOUT, 0};
      int r = ::poll(&p, 1, static_cast<int>(k_send_idle.count()));
      if (r == 0) {
        throw GuestError("the guest helper took no data on " + m_path + " for " + seconds(k_send_idle),
                         ExitCode::failed, "is kata-snapshot-helper stopped or hung in the guest?");
      }
      if (r < 0 && errno != EINTR) {
        throw_errno("poll failed on the guest helper channel " + m_path);
      }
      continue;
    }
    if (n <= 0) {
      throw_errno("failed to write to the guest helper channel " + m_path);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

Json Channel::download(const std::string& command, const Json& arguments, uint64_t max_bytes,
                       const Sink& sink, Millis idle) {
  Json reply = execute(command, arguments, idle);
  if (!reply.is_object() || !reply.contains("bytes") || !reply["bytes"].is_number_unsigned()) {
    throw GuestError("the guest helper's answer to " + command + " announces no byte count");
  }
  uint64_t left = reply["bytes"];
  if (left > max_bytes) {
    throw GuestError("the guest helper announced " + std::to_string(left) + " bytes for " + command +
                     ", more than the " + std::to_string(max_bytes) + " expected");
  }
  std::string buffered = m_lines.take_buffered(left);
  if (!buffered.empty()) {
    sink(buffered);
    left -= buffered.size();
  }
  std::string buf(k_raw_piece, '\0');
  while (left > 0) {
    if (!wait_readable(m_sock.get(), Deadline(idle))) {
      throw GuestError("the guest helper stopped sending " + command + " with " + std::to_string(left) +
                       " bytes to go (nothing for " + seconds(idle) + ")");
    }
    ssize_t n = ::recv(m_sock.get(), buf.data(), std::min<uint64_t>(buf.size(), left), 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      throw GuestError("guest helper channel " + m_path + " closed with " + std::to_string(left) +
                       " bytes of " + command + " to go");
    }
    sink(std::string_view(buf.data(), static_cast<size_t>(n)));
    left -= static_cast<uint64_t>(n);
  }
  return reply;
}

Json Channel::upload(const std::string& command, const Json& arguments, uint64_t size, const Source& source,
                     Millis timeout) {
  send_raw(command_request(command, arguments));
  std::string buf(k_raw_piece, '\0');
  for (uint64_t left = size; left > 0;) {
    size_t n = source(std::span<char>(buf.data(), std::min<uint64_t>(buf.size(), left)));
    if (n == 0) {
      throw GuestError("the data for " + command + " ended " + std::to_string(left) + " bytes short");
    }
    send_raw(std::string_view(buf.data(), n));
    left -= n;
  }
  return await_reply(command, timeout);
}

std::optional<std::string> Channel::read_line(const Deadline& deadline, const std::string& command) {
  std::string line;
  int err = 0;
  switch (m_lines.read_line(m_sock.get(), deadline, line, err)) {
  case LineSocket::Status::line:
    return line;
  case LineSocket::Status::timeout:
    return std::nullopt;
  case LineSocket::Status::too_long:
    throw GuestError("the guest helper sent a line over 1 MiB on " + m_path + " while answering " + command);
  case LineSocket::Status::closed:
    break;
  }
  throw GuestError("guest helper channel " + m_path + " closed while waiting for " + command);
}

std::string Channel::sync_request(int64_t id) {
  // 0xFF makes the agent drop any partial request; the delimited reply starts with 0xFF too.
  return std::string(1, '\xff') +
         Json{{"execute", "guest-sync-delimited"}, {"arguments", {{"id", id}}}}.dump() + "\n";
}

std::string Channel::command_request(const std::string& command, const Json& arguments) {
  Json request = {{"execute", command}};
  if (!arguments.empty()) {
    request["arguments"] = arguments;
  }
  return request.dump() + "\n";
}

void Channel::resync(Millis timeout) {
  Deadline deadline(timeout);
  for (;;) {
    // A sync the helper never saw (a request lost as the port opens, seen now and then under
    // load) is sent again with a fresh id; only the newest id counts, and the helper answers
    // in order, so an older sync's late reply comes before it and is skipped.
    int64_t id = fresh_sync_id();
    send_raw(sync_request(id));
    if (await_sync(id, std::min(k_sync_retry, Millis(deadline.poll_timeout())))) {
      return;
    }
    if (deadline.expired()) {
      throw GuestError("the guest helper did not answer on " + m_path + " within " + seconds(timeout),
                       ExitCode::failed,
                       "is kata-snapshot-helper (or qemu-guest-agent) running in the guest?");
    }
  }
}

bool Channel::await_sync(int64_t id, Millis timeout) {
  Deadline deadline(timeout);
  for (;;) {
    auto got = read_line(deadline, "guest-sync-delimited");
    if (!got) {
      return false;
    }
    std::string line = std::move(*got);
    auto ff = line.rfind('\xff');
    if (ff != std::string::npos) {
      line.erase(0, ff + 1);
    }
    Json reply = Json::parse(line, nullptr, false);
    if (!reply.is_discarded() && reply.is_object() && reply.value("return", Json()) == id) {
      return true;
    }
    // Garbage or a stale reply from an earlier session: keep reading.
  }
}

Json Channel::execute(const std::string& command, const Json& arguments, Millis timeout, Millis idle) {
  send_raw(command_request(command, arguments));
  return await_reply(command, timeout, idle);
}

Json Channel::connect_and_execute(const std::string& socket_path, const std::string& command,
                                  const Json& arguments, Millis timeout) {
  Deadline deadline(timeout);
  Channel c(connect_unix(socket_path, deadline), socket_path);
  int64_t id = fresh_sync_id();
  c.send_raw(sync_request(id) + command_request(command, arguments));
  if (!c.await_sync(id, std::min(k_sync_retry, Millis(deadline.poll_timeout())))) {
    // Not answered at once: synchronise the slow way, then ask again (the commands sent this
    // way may run twice: a clock refresh, a thaw). A late reply to the first one comes before
    // the new sync's and is skipped with it.
    c.resync(Millis(deadline.poll_timeout()));
    c.send_raw(command_request(command, arguments));
  }
  return c.await_reply(command, Millis(deadline.poll_timeout()));
}

Json Channel::await_reply(const std::string& command, Millis timeout, Millis idle) {
  Deadline deadline(timeout);
  for (;;) {
    bool watch_idle = idle.count() > 0 && idle < timeout;
    auto line = read_line(watch_idle ? Deadline(idle) : deadline, command);
    if (!line && watch_idle && !deadline.expired()) {
      throw GuestError("the guest helper went silent during " + command + " (nothing for " + seconds(idle) +
                         ", no heartbeat)",
                       ExitCode::failed, "was kata-snapshot-helper killed or restarted in the guest?");
    }
    if (!line) {
      throw GuestError("the guest helper did not answer " + command + " within " + seconds(timeout));
    }
    Json reply = Json::parse(*line, nullptr, false);
    if (reply.is_discarded() || !reply.is_object()) {
      continue; // Noise on the line; the reply is still to come.
    }
    if (reply.contains("error")) {
      throw GuestRefused("the guest helper refused " + command + ": " +
                         reply["error"].value("desc", "unknown error"));
    }
    if (reply.contains("return")) {
      return reply["return"];
    }
  }
}

} // namespace ks::guest
