// The host side of the helper channel against a peer that reads but never answers (a helper
// stopped in the guest, as QEMU's chardev sees it until the port's buffers fill): it gives
// up at its timeout having sent a sync request every 2 s, not a burst of them at the end.
#include "guest-helper/channel.hpp"
#include "util/deadline.hpp"

#include <catch2/catch.hpp>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace ks;

TEST_CASE("deadline: poll_timeout is 0 only once the deadline passed") {
  Deadline d(Millis(3));
  size_t passes = 0, early_zeros = 0;
  for (; !d.expired(); ++passes) {
    // poll_timeout() first: if it says 0, the deadline had passed, and still has.
    int left = d.poll_timeout();
    early_zeros += left == 0 && !d.expired();
  }
  CHECK(passes > 0);
  CHECK(early_zeros == 0);
  CHECK(d.poll_timeout() == 0);
}

TEST_CASE("guest channel: a helper that never answers gets a sync every 2 s until the timeout") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  Fd ours(sv[0]);
  Fd peer(sv[1]);
  std::string received;
  std::thread reader([&] { // reads everything, answers nothing, until the channel closes
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::read(peer.get(), buf, sizeof buf)) > 0) {
      received.append(buf, static_cast<size_t>(n));
    }
  });
  auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(guest::Channel::over(std::move(ours), "test channel", Millis(2500)), guest::GuestError);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  reader.join();
  size_t syncs = 0;
  for (size_t at = 0; (at = received.find("guest-sync-delimited", at)) != std::string::npos; ++at) {
    ++syncs;
  }
  CHECK(took >= 2.4);
  CHECK(took < 4.0);
  CHECK(syncs >= 2); // at 0 s and 2 s
  CHECK(syncs <= 3);
}
