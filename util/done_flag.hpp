// A one-shot flag another thread sets, with a timed wait: lets a loop that polls something
// else (QMP, a signal flag) wake up as soon as the work it waits for is done.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace ks {

class DoneFlag {
public:
  void set() {
    {
      std::lock_guard lock(m_mutex);
      m_done = true;
    }
    m_cv.notify_all();
  }

  // True when set (now or within TIMEOUT).
  bool wait_for(std::chrono::milliseconds timeout) {
    std::unique_lock lock(m_mutex);
    return m_cv.wait_for(lock, timeout, [this] { return m_done; });
  }

  bool is_set() {
    std::lock_guard lock(m_mutex);
    return m_done;
  }

private:
  std::mutex m_mutex;
  std::condition_variable m_cv;
  bool m_done = false;
};

} // namespace ks
