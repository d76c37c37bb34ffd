// A one-line progress indicator on stderr (bytes so far, the rate), shown only when stderr is
// a terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace ks {

class ProgressLine {
public:
  // EXPECTED_BYTES (0: unknown) is shown as "(WHAT N)".
  ProgressLine(bool wanted, std::string label, uint64_t expected_bytes, std::string what = "guest RAM");
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
  std::string m_what;
  std::chrono::steady_clock::time_point m_start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point m_last{};
};

} // namespace ks
