// With -v, each named step of a save or load reports its duration on stderr.
#pragma once

#include <chrono>
#include <cstdio>

namespace ks {

class StepLog {
public:
  explicit StepLog(bool verbose) : m_verbose(verbose) {}

  // Call with the name of the step that just finished.
  void done(const char* step) {
    auto now = std::chrono::steady_clock::now();
    if (m_verbose) {
      std::fprintf(stderr, "kata-snapshot: %-14s %7.3f s\n", step,
                   std::chrono::duration<double>(now - m_last).count());
    }
    m_last = now;
  }

private:
  bool m_verbose;
  std::chrono::steady_clock::time_point m_last = std::chrono::steady_clock::now();
};

} // namespace ks
