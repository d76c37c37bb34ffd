// A one-line progress indicator on stderr, shown only when stderr is a terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace ks {

class ProgressLine {
public:
  ProgressLine(bool wanted, std::string label, uint64_t expected_bytes);
  ~ProgressLine() { finish(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  void update(uint64_t bytes);
  void finish();

private:
  bool m_active;
  bool m_drawn = false;
  std::string m_label;
  uint64_t m_expected;
  std::chrono::steady_clock::time_point m_last{};
};

} // namespace ks
