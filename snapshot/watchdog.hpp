// A save's guard against its own SIGKILL. Nothing runs in a killed process, yet the VM must
// not stay paused, frozen or half-migrated. So before a save changes anything it starts a
// small process of its own, `kata-snapshot watchdog`, detached, that holds the read end of a
// pipe and the plan of what to put back. The save tells it to stand down ("disarm") once the
// VM is where it should be, on success and after its own rollback; if the pipe ends without
// that, the save died, and the watchdog puts the VM back itself: it takes the VM's lock,
// cancels the migration, restores QEMU's migration settings, resumes a VM that was running,
// thaws the guest, and removes the save's temp files. Worst case: the time QEMU takes to
// answer, about a second; the helper's own auto-thaw (60 s) backs the thaw up.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <sys/types.h>
#include <vector>

#include "util/fd.hpp"

namespace ks {

// What to put back if the save dies.
struct WatchdogPlan {
  std::string qmp_socket;
  pid_t qemu_pid = -1;
  bool was_running = false;
  nlohmann::json capabilities = nlohmann::json::array(); // query-migrate-capabilities, before
  nlohmann::json parameters = nlohmann::json::object();  // the parameters a save sets, before
  std::string helper_socket;                             // "" without a helper port
  std::vector<std::string> remove;                       // files a dead save leaves behind

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

  // One more file to remove if the save dies.
  void also_remove(const std::string& path) noexcept;
  // Stand down: the save put the VM where it should be.
  void disarm() noexcept;

private:
  Fd m_pipe;
};

// The watchdog process: reads the plan from FD, waits; returns its exit status.
int run_watchdog(int fd);

} // namespace ks
