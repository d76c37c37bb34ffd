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

void write_reply(int fd, const Json& reply, bool delimiter) {
  std::string out = (delimiter ? std::string(1, '\xff') : std::string()) + reply.dump() + "\n";
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

// Feeds bytes into the line buffer; 0xFF discards a partial line (the host's resync).
void handle_bytes(Agent& agent, int fd, std::string& line, const char* data, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    char c = data[i];
    if (static_cast<unsigned char>(c) == 0xff) {
      line.clear();
    } else if (c == '\n') {
      if (line.find_first_not_of(" \t\r") != std::string::npos) {
        Json request = Json::parse(line, nullptr, false);
        bool delimiter = false;
        Json reply = request.is_discarded()
                       ? Json{{"error", {{"class", "GenericError"}, {"desc", "invalid JSON"}}}}
                       : agent.handle(request, delimiter);
        write_reply(fd, reply, delimiter);
      }
      line.clear();
    } else if (line.size() < (1u << 20)) {
      line += c;
    }
  }
}

// Serves one open port until the host disconnects (read returns 0) or an error.
void serve(Agent& agent, int fd) {
  std::string line;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return;
    }
    handle_bytes(agent, fd, line, buf, static_cast<size_t>(n));
  }
}

} // namespace

int main(int argc, char** argv) {
  std::string name = argc > 1 ? argv[1] : k_port_name;
  const char* state = argc > 2 ? argv[2] : "/run/kata-snapshot-helper.state";
  Agent agent(state);
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
