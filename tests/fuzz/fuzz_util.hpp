// Helpers shared by the libFuzzer targets (make fuzz; tests/fuzz/README.md).
#pragma once

#include "util/error.hpp"
#include "util/fd.hpp"

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <poll.h>
#include <string>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <utility>

namespace ks::fuzz {

// Once per process: a peer that went away is an EPIPE, not a SIGPIPE that ends the run.
inline void setup() {
  static const bool done = [] {
    ::signal(SIGPIPE, SIG_IGN);
    return true;
  }();
  (void)done;
}

inline void write_bytes(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
}

// The input as a file (an archive read from a descriptor).
inline Fd memory_file(const uint8_t* data, size_t size) {
  Fd fd(::memfd_create("fuzz", MFD_CLOEXEC));
  write_bytes(fd.get(), data, size);
  ::lseek(fd.get(), 0, SEEK_SET);
  return fd;
}

inline std::pair<Fd, Fd> socket_pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    std::abort();
  }
  return {Fd(sv[0]), Fd(sv[1])};
}

// Sends what the other end says (inputs stay under the socket buffer: -max_len), then hangs up.
inline void send_and_close(Fd fd, const uint8_t* data, size_t size) {
  write_bytes(fd.get(), data, std::min<size_t>(size, 100000));
  ::shutdown(fd.get(), SHUT_WR);
}

// The id of the guest-sync-delimited request the channel sends first ("" if none in 1 s).
inline std::string read_sync_id(int fd) {
  std::string got;
  char c = 0;
  while (got.find('\n') == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0 || ::read(fd, &c, 1) != 1) {
      return {};
    }
    got += c;
  }
  size_t at = got.find("\"id\":");
  if (at == std::string::npos) {
    return {};
  }
  size_t end = got.find_first_not_of("-0123456789", at + 5);
  return got.substr(at + 5, end - at - 5);
}

// A fresh directory under $TMPDIR (scripts/fuzz.sh gives each run its own, and removes it).
inline std::string temp_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string t = std::string(base ? base : "/tmp") + "/ksnap-fuzz-XXXXXX";
  if (!::mkdtemp(t.data())) {
    std::abort();
  }
  return t;
}

} // namespace ks::fuzz
