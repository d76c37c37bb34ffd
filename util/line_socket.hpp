// Reading '\n'-terminated messages from a stream socket with a deadline and a size bound:
// the framing of QMP and of the guest agent protocol.
#pragma once

#include <optional>
#include <string>

namespace ks {

class Deadline;

class LineSocket {
public:
  enum class Status { line, timeout, closed, too_long };

  explicit LineSocket(size_t max_line) : m_max_line(max_line) {}

  // Reads the next line from FD into LINE (without the '\n'). On `closed`, ERR is the errno
  // of the failed read, or 0 for an orderly end of stream.
  Status read_line(int fd, const Deadline& deadline, std::string& line, int& err);

  // Up to MAX bytes read past the last line, taken out of the buffer (raw data that follows
  // a message).
  std::string take_buffered(size_t max);

private:
  size_t m_max_line;
  std::string m_buf;
};

} // namespace ks
