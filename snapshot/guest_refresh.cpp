#include "snapshot/guest_refresh.hpp"

#include "guest-helper/channel.hpp"
#include "util/fd.hpp"

#include <chrono>
#include <fcntl.h>
#include <vector>

namespace ks {

namespace {

std::string host_entropy_base64(size_t n) {
  std::vector<unsigned char> raw(n);
  Fd rnd = open_file("/dev/urandom", O_RDONLY);
  read_full(rnd.get(), std::as_writable_bytes(std::span(raw)), "/dev/urandom");
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = raw[i] << 16 | (i + 1 < n ? raw[i + 1] << 8 : 0) | (i + 2 < n ? raw[i + 2] : 0);
    out += abc[(v >> 18) & 63];
    out += abc[(v >> 12) & 63];
    out += i + 1 < n ? abc[(v >> 6) & 63] : '=';
    out += i + 2 < n ? abc[v & 63] : '=';
  }
  return out;
}

} // namespace

nlohmann::json post_restore_arguments() {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  long long ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now).count();
  return {{"time", ns}, {"entropy", host_entropy_base64(64)}};
}

nlohmann::json refresh_guest(const std::optional<std::string>& helper_socket) {
  if (!helper_socket) {
    return {{"refreshed", false}, {"reason", "the VM has no helper port"}};
  }
  try {
    nlohmann::json r =
      guest::Channel::connect_and_execute(*helper_socket, "kata-snapshot-post-restore",
                                          post_restore_arguments(), std::chrono::milliseconds(5000));

    r["refreshed"] = true;
    return r;
  } catch (const std::exception& e) {
    return {{"refreshed", false}, {"reason", e.what()}};
  }
}

} // namespace ks
