// A save's or a load's guard against its own SIGKILL. Nothing runs in a killed process, yet
// the VM must not stay paused, frozen or half-migrated, and a load must not leave a QEMU or a
// virtiofsd behind. So before it changes anything the tool starts a small process of its
// own, `kata-snapshot watchdog`, detached, that holds the read end of a pipe and the plan of
// what to put back. The tool tells it to stand down ("disarm") once things are where they
// should be, on success and after its own rollback; if the pipe ends without that, the tool
// died, and the watchdog does the rollback itself:
// - a save's: it takes the VM's lock, cancels the migration, restores QEMU's migration
//   settings, resumes a VM that was running and thaws the guest;
// - a load's: it stops the QEMU and virtiofsd processes the load started (TERM, then KILL
//   after 2 s), each only if it is still the process that was started;
// - a container-mode save's (the VM runs throughout): nothing but the files below;
// - all: it removes the temp files and sockets the tool named.
// Worst case: the time QEMU takes to answer, about a second, or 2 s for a process that
// ignores SIGTERM; the helper's own auto-thaw (60 s) backs the thaw up.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <sys/types.h>
#include <vector>

#include "util/fd.hpp"

namespace ks {

// What to put back if the save or load dies.
struct WatchdogPlan {
  std::string qmp_socket; // a save's VM; "" for a load

  pid_t qemu_pid = -1;
  bool was_running = false;
  nlohmann::json capabilities = nlohmann::json::array(); // query-migrate-capabilities, before
  nlohmann::json parameters = nlohmann::json::object();  // the parameters a save sets, before
  std::string helper_socket;                             // "" without a helper port
  std::vector<pid_t> virtiofsd;                          // a save's VM's virtiofsd daemons
  std::vector<std::string> remove;                       // files a dead save leaves behind
  std::vector<std::pair<pid_t, std::string>> stop;       // a load's processes: pid, start ticks
  std::string run_dir;                                   // a load's run directory
  std::string output;                                    // a container-mode save's output

  nlohmann::json to_json() const;
  static WatchdogPlan from_json(const nlohmann::json& j);
};

// The migration parameters a save may change (and the watchdog puts back).
const std::vector<std::string>& watched_parameters();

class Watchdog {
public:
  // Starts `kata-snapshot watchdog` (this same binary) with PLAN.
  explicit Watchdog(const WatchdogPlan& plan);
  // Disarms: the owner only lets it go once the VM is where it should be.
  ~Watchdog() { disarm(); }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // One more file to remove if the owner dies.
  void also_remove(const std::string& path) noexcept;
  // One more process (of ours) to stop if the owner dies.
  void also_stop(pid_t pid) noexcept;
  // Stand down: the save put the VM where it should be.
  void disarm() noexcept;

private:
  Fd m_pipe;
};

// The watchdog process: reads the plan from FD, waits; returns its exit status.
int run_watchdog(int fd);

} // namespace ks
