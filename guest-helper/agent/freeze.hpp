// Filesystem freezing inside the guest: sync, FIFREEZE what can freeze (reverse mount order),
// syncfs the rest; thaw on request, on a timeout, or on any partial failure. The frozen set is
// kept in a state file under /run (tmpfs, never frozen) so a restarted helper can thaw it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ks::agent {

class FreezeState {
public:
  explicit FreezeState(std::string state_file);
  ~FreezeState();
  FreezeState(const FreezeState&) = delete;
  FreezeState& operator=(const FreezeState&) = delete;

  // Returns how many filesystems were frozen. Throws std::runtime_error naming the mount that
  // failed, after thawing everything this call froze.
  int freeze(std::chrono::seconds auto_thaw);
  // Returns how many filesystems were thawed (0 when nothing was frozen).
  int thaw();
  bool frozen();

private:
  void save_state();
  void load_state();
  void watchdog();
  int thaw_locked();

  std::string m_state_file;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::vector<std::string> m_frozen; // in freeze order
  std::chrono::steady_clock::time_point m_deadline;
  bool m_stop = false;
  std::thread m_watchdog;
};

} // namespace ks::agent
