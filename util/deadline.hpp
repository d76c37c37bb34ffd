// A point in time a blocking operation must finish by, in the monotonic clock.
#pragma once

#include <chrono>

namespace ks {

using Millis = std::chrono::milliseconds;

class Deadline {
public:
  explicit Deadline(Millis budget) : m_end(std::chrono::steady_clock::now() + budget) {}

  static Deadline never() { return Deadline(std::chrono::hours(24 * 365)); }

  bool expired() const { return std::chrono::steady_clock::now() >= m_end; }

  // Milliseconds left, rounded up and clamped to [0, INT_MAX], in the form poll(2) takes:
  // 0 only once expired().
  int poll_timeout() const;

private:
  std::chrono::steady_clock::time_point m_end;
};

// Seconds from T until now, in the monotonic clock.
inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

} // namespace ks
