#include "util/error.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ks {

void throw_errno(const std::string& what, int err) {
  throw Error(what + ": " + std::strerror(err));
}

void throw_errno(const std::string& what) {
  throw_errno(what, errno);
}

void assertion_failed(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "kata-snapshot: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
  std::abort();
}

} // namespace ks
