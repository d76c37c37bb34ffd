#include "util/cancel.hpp"

#include "util/error.hpp"

#include <atomic>
#include <csignal>
#include <cstring>

namespace ks {

namespace {

std::atomic<int> g_signal{0};

void on_signal(int sig) {
  g_signal.store(sig);
}

} // namespace

void install_cancel_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  // No SA_RESTART: blocking calls return EINTR so loops notice the request quickly.
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

bool cancel_requested() {
  return g_signal.load() != 0;
}

int cancel_signal() {
  return g_signal.load();
}

void throw_if_cancelled() {
  if (int sig = g_signal.load()) {
    throw Error(std::string("interrupted by SIG") + sigabbrev_np(sig));
  }
}

} // namespace ks
