#include "util/fd.hpp"

#include "util/deadline.hpp"
#include "util/error.hpp"
#include "util/strings.hpp"

#include <cerrno>
#include <climits>
#include <dirent.h>
#include <fcntl.h>
#include <memory>
#include <poll.h>
#include <unistd.h>

namespace ks {

int Deadline::poll_timeout() const {
  // Rounded up: a deadline not yet passed never gives 0, which would make every wait in a
  // loop that runs until expired() return at once for its last fraction of a millisecond
  // (a channel resync sent a sync request per pass, hundreds, and filled the socket).
  auto left = std::chrono::ceil<Millis>(m_end - std::chrono::steady_clock::now()).count();
  if (left <= 0) {
    return 0;
  }
  return left > INT_MAX ? INT_MAX : static_cast<int>(left);
}

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    reset(other.release());
  }
  return *this;
}

void Fd::reset(int fd) {
  if (m_fd >= 0) {
    ::close(m_fd);
  }
  m_fd = fd;
}

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw_errno("failed to create a pipe");
  }
  return Pipe{Fd(fds[0]), Fd(fds[1])};
}

void grow_pipe(int fd, size_t bytes) {
  ::fcntl(fd, F_SETPIPE_SZ, static_cast<int>(bytes));
}

Fd open_file(const std::string& path, int flags, int mode) {

  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) {
    throw_errno("failed to open " + path);
  }
  return Fd(fd);
}

void write_all(int fd, std::span<const std::byte> data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw_errno("failed to write " + what);
    }
    data = data.subspan(static_cast<size_t>(n));
  }
}

void write_all(int fd, const std::string& data, const std::string& what) {
  write_all(fd, std::as_bytes(std::span(data.data(), data.size())), what);
}

size_t read_full(int fd, std::span<std::byte> buf, const std::string& what) {
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw_errno("failed to read " + what);
    }
    if (n == 0) {
      break;
    }
    got += static_cast<size_t>(n);
  }
  return got;
}

bool wait_readable(int fd, const Deadline& deadline) {
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, deadline.poll_timeout());
    if (r > 0) {
      return true;
    }
    if (r == 0) {
      return false;
    }
    if (errno != EINTR) {
      throw_errno("poll failed");
    }
  }
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  while (d) {
    dirent* e = ::readdir(d.get());
    if (!e) {
      break;
    }
    std::string name = e->d_name;
    if (name != "." && name != "..") {
      out.push_back(std::move(name));
    }
  }
  return out;
}

std::string read_file(const std::string& path) {
  Fd fd = open_file(path, O_RDONLY);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw_errno("failed to read " + path);
    }
    if (n == 0) {
      return out;
    }
    out.append(buf, static_cast<size_t>(n));
  }
}

} // namespace ks

namespace ks {

std::string log_tail(const std::string& path, size_t lines) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error&) {
    return {};
  }
  std::vector<std::string> all = split(trim(text), '\n');
  size_t from = all.size() > lines ? all.size() - lines : 0;
  return join(std::vector<std::string>(all.begin() + static_cast<long>(from), all.end()), " | ");
}

} // namespace ks
