#include "util/progress.hpp"

#include "util/strings.hpp"

#include <cstdio>
#include <unistd.h>

namespace ks {

ProgressLine::ProgressLine(bool wanted, std::string label, uint64_t expected_bytes, std::string what)
  : m_active(wanted && ::isatty(STDERR_FILENO)), m_label(std::move(label)), m_expected(expected_bytes),
    m_what(std::move(what)) {}

void ProgressLine::update(uint64_t bytes) {
  auto now = std::chrono::steady_clock::now();
  if (!m_active || now - m_last < std::chrono::milliseconds(200)) {
    return;
  }
  m_last = now;
  m_drawn = true;
  double seconds = std::chrono::duration<double>(now - m_start).count();
  std::string rate =
    seconds > 0 ? ", " + human_size(static_cast<uint64_t>(static_cast<double>(bytes) / seconds)) + "/s" : "";
  std::string of = m_expected ? " (" + m_what + " " + human_size(m_expected) + ")" : "";
  std::fprintf(stderr, "\r%s: %s%s%s\033[K", m_label.c_str(), human_size(bytes).c_str(), of.c_str(),
               rate.c_str());
}

void ProgressLine::finish() {
  if (m_drawn) {
    std::fprintf(stderr, "\r\033[K");
    m_drawn = false;
  }
}

} // namespace ks
