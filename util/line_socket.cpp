#include "util/line_socket.hpp"

#include "util/deadline.hpp"
#include "util/fd.hpp"

#include <cerrno>
#include <sys/socket.h>

namespace ks {

LineSocket::Status LineSocket::read_line(int fd, const Deadline& deadline, std::string& line, int& err) {
  err = 0;
  for (;;) {
    auto nl = m_buf.find('\n');
    if (nl != std::string::npos) {
      line = m_buf.substr(0, nl);
      m_buf.erase(0, nl + 1);
      return Status::line;
    }
    if (m_buf.size() > m_max_line) {
      return Status::too_long;
    }
    if (!wait_readable(fd, deadline)) {
      return Status::timeout;
    }
    char buf[65536];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      err = n < 0 ? errno : 0;
      return Status::closed;
    }
    m_buf.append(buf, static_cast<size_t>(n));
  }
}

std::string LineSocket::take_buffered(size_t max) {
  std::string out = m_buf.substr(0, max);
  m_buf.erase(0, out.size());
  return out;
}

} // namespace ks
