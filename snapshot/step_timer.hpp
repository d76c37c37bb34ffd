// With -v, each named step of a save or load reports its duration on stderr.
#pragma once

#include <chrono>
#include <cstdio>

#include "util/cancel.hpp"
#include "util/fault.hpp"

namespace ks {

class StepLog {
public:
  // CANCEL_POINTS: a SIGINT/SIGTERM that arrived during a step ends the run after it.
  explicit StepLog(bool verbose, bool cancel_points = false)
    : m_verbose(verbose), m_cancel_points(cancel_points) {}

  // Call with the name of the step that just finished (a KSNAP_FAULT may fire there).
  void done(const char* step) {
    auto now = std::chrono::steady_clock::now();
    if (m_verbose) {
      std::fprintf(stderr, "kata-snapshot: %-14s %7.3f s\n", step,
                   std::chrono::duration<double>(now - m_last).count());
    }
    m_last = now;
    fault_point(step);
    if (m_cancel_points) {
      throw_if_cancelled();
    }
  }

private:
  bool m_verbose;
  bool m_cancel_points;
  std::chrono::steady_clock::time_point m_last = std::chrono::steady_clock::now();
};

} // namespace ks
