// kata-snapshot-helper: runs inside the guest and answers the host on its virtio-serial port.
#include "guest-helper/agent/commands.hpp"
#include "guest-helper/agent/port.hpp"
#include "util/fd.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <thread>
#include <unistd.h>

namespace {

using namespace ks::agent;

void log(const std::string& msg) {
  std::fprintf(stderr, "kata-snapshot-helper: %s\n", msg.c_str());
}

void write_out(int fd, std::string_view out) {
  const char* p = out.data();
  size_t left = out.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return; // Host went away; the next read notices.
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// Serves one open port until the host disconnects (read returns 0) or an error; a transfer
// in flight is then dropped.
void serve(Agent& agent, int fd) {
  // Requests are read 4 KiB at a time, an image's bytes 256 KiB at a time. (Reading the port
  // 256 KiB at a time from the start lost the host's first request now and then, under load.)
  std::string buf(size_t{256} * 1024, '\0');
  for (;;) {
    size_t want = agent.receiving() ? buf.size() : 4096;
    ssize_t n = ::read(fd, buf.data(), want);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      agent.reset();
      return;
    }
    agent.feed(std::string_view(buf.data(), static_cast<size_t>(n)),
               [fd](std::string_view out) { write_out(fd, out); });
  }
}

} // namespace

int main(int argc, char** argv) {
  std::string name = argc > 1 ? argv[1] : k_port_name;
  const char* state = argc > 2 ? argv[2] : "/run/kata-snapshot-helper.state";
  Agent agent(system_effects(state));
  bool announced = false;
  for (;;) {
    std::string path = find_port(name);
    ks::Fd fd(path.empty() ? -1 : ::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd) {
      // Not there yet (it may be hot-added) or host side not ready: look again shortly.
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    if (!announced) {
      log("serving " + name + " on " + path);
      announced = true;
    }
    serve(agent, fd.get());
    fd.reset();
    // The host disconnected: a closed port reads 0 until it reconnects.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}
