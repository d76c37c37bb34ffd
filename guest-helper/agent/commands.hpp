// The helper's commands: the QEMU guest agent's JSON protocol plus kata-snapshot's own
// post-restore and container-mode commands (docs/guest-helper-protocol.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace ks::agent {

using Json = nlohmann::json;

inline constexpr const char* k_version = "0.3.0";

// Container mode (guest-helper/agent/containers.hpp). Methods throw std::exception with a
// message for the host (the first line names what failed, the rest says how to fix it).
class ContainerOps {
public:
  // Called every few seconds while CRIU runs: the helper sends the host a blank line, so a
  // host waiting for a long dump or restore can tell a busy helper from a dead one.
  using Heartbeat = std::function<void()>;
  static constexpr std::chrono::seconds k_heartbeat{2};

  virtual ~ContainerOps() = default;
  virtual Json list() = 0;
  // Checkpoints container ID with CRIU into the guest's tmpfs, leaving it running. AFTER:
  // resume (left as it was), pause (left frozen), or hold: left frozen until finish() says
  // what becomes of it, and thawed by itself after HOLD should that never come (the host
  // ends a container only once its checkpoint is safely stored). Returns the image files and
  // the spec.
  virtual Json dump(const std::string& id, const std::string& after, std::chrono::seconds hold,
                    const Heartbeat& alive) = 0;
  // Ends a hold: ACTION kill (the container is stopped) or resume (thawed, as it was).
  virtual Json finish(const std::string& id, const std::string& action) = 0;
  // Image NAME of ID's checkpoint, open for reading; SIZE set to its length.
  virtual int open_image(const std::string& id, const std::string& name, uint64_t& size) = 0;
  // A new image NAME for ID's restore, open for writing; SIZE bytes must fit.
  virtual int create_image(const std::string& id, const std::string& name, uint64_t size) = 0;
  virtual Json restore(const std::string& id, const Heartbeat& alive) = 0;
  // Removes ID's checkpoint and restore images.
  virtual Json discard(const std::string& id) = 0;
  // The host's connection ended: every held container goes back as it was (the host that
  // held it can no longer store its checkpoint).
  virtual void host_gone() = 0;
};

// What the commands do to the system. The helper uses the real ones (system_effects());
// the fuzz target substitutes inert ones, so that no input freezes or re-clocks its host.
struct Effects {
  std::function<int(std::chrono::seconds auto_thaw)> freeze; // filesystems frozen
  std::function<int()> thaw;                                 // filesystems thawed
  std::function<bool()> frozen;
  std::function<int64_t(int64_t ns)> set_clock; // the correction applied
  std::function<void(const std::string&)> add_entropy;
  std::function<bool()> reseed_crng;
  std::shared_ptr<ContainerOps> containers; // nullptr: container mode unsupported
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
  // host's resync). Lines longer than 1 MiB are cut. A request may move raw bytes: the
  // reply to kata-snapshot-container-send is followed by the image's bytes, and the request
  // kata-snapshot-container-receive by as many bytes as it announces, answered once they
  // are all in.
  using Reply = std::function<void(std::string_view)>;
  void feed(std::string_view data, const Reply& reply);

  // The host went away: a transfer in flight is dropped.
  void reset();

  // An image's bytes are coming (kata-snapshot-container-receive).
  bool receiving() const { return m_receive.has_value(); }

private:
  using Handler = std::function<Json(const Json& args)>;
  struct Command {
    Handler run;
    bool safe_while_frozen;
  };

  Json info() const;
  Json post_restore(const Json& args);
  ContainerOps& containers() const;
  ContainerOps::Heartbeat heartbeat() const;
  void add_container_commands();
  void request(const std::string& line, const Reply& reply);
  // Consumes raw bytes of a receive from DATA; returns how many it took.
  size_t receive(std::string_view data, const Reply& reply);

  // An image on its way: from the guest after a reply (send), or to it (receive).
  struct Transfer {
    int fd = -1;
    uint64_t left = 0;
    uint64_t total = 0;
    std::string error; // receive: a write failed; the rest is read and dropped
    Json id;           // the request's id, for the deferred reply
  };
  void end_transfer(std::optional<Transfer>& t);

  Effects m_fx;
  std::map<std::string, Command> m_commands;
  std::string m_line;
  std::optional<Transfer> m_send;
  std::optional<Transfer> m_receive;
  const Reply* m_reply = nullptr; // while a request runs: for heartbeats
};

} // namespace ks::agent
