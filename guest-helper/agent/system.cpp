#include "guest-helper/agent/system.hpp"

#include "util/fd.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <linux/random.h>
#include <stdexcept>
#include <sys/ioctl.h>

namespace ks::agent {

int64_t set_clock(int64_t ns) {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  int64_t old_ns = static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec;
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  if (::clock_settime(CLOCK_REALTIME, &ts) != 0) {
    throw std::runtime_error(std::string("failed to set the clock: ") + std::strerror(errno));
  }
  return ns - old_ns;
}

void add_entropy(const std::string& bytes) {
  Fd rnd(::open("/dev/random", O_WRONLY | O_CLOEXEC));
  if (!rnd) {
    throw std::runtime_error(std::string("failed to open /dev/random: ") + std::strerror(errno));
  }
  // rand_pool_info with a fixed buffer (the kernel's struct ends in a flexible array).
  struct {
    int entropy_count;
    int buf_size;
    unsigned char buf[512];
  } info{};
  size_t n = std::min(bytes.size(), sizeof info.buf);
  info.entropy_count = static_cast<int>(n * 8);
  info.buf_size = static_cast<int>(n);
  std::memcpy(info.buf, bytes.data(), n);
  if (::ioctl(rnd.get(), RNDADDENTROPY, &info) != 0) {
    throw std::runtime_error(std::string("RNDADDENTROPY failed: ") + std::strerror(errno));
  }
}

bool reseed_crng() {
#ifdef RNDRESEEDCRNG
  Fd rnd(::open("/dev/random", O_WRONLY | O_CLOEXEC));
  return rnd && ::ioctl(rnd.get(), RNDRESEEDCRNG) == 0;
#else
  return false;
#endif
}

std::string decode_base64(const std::string& text) {
  std::string out;
  unsigned value = 0;
  int bits = 0;
  for (char c : text) {
    int v = c >= 'A' && c <= 'Z'   ? c - 'A'
            : c >= 'a' && c <= 'z' ? c - 'a' + 26
            : c >= '0' && c <= '9' ? c - '0' + 52
            : c == '+'             ? 62
            : c == '/'             ? 63
                                   : -1;
    if (v < 0) {
      continue; // padding and whitespace
    }
    value = (value << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((value >> bits) & 0xff);
    }
  }
  return out;
}

} // namespace ks::agent
