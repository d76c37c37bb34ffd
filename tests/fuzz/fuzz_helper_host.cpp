// Fuzz target: the host side of the helper channel, reading what a malicious guest sends.
// The channel opens with guest-sync-delimited and a random id; "@ID@" in the input stands
// for it, so that inputs get past the resync and reach the command replies.
#include "guest-helper/channel.hpp"
#include "tests/fuzz/fuzz_util.hpp"

#include <thread>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ks::fuzz::setup();
  auto [ours, theirs] = ks::fuzz::socket_pair();
  std::string input(reinterpret_cast<const char*>(data), size);
  std::thread guest([fd = std::move(theirs), input]() mutable {
    std::string id = ks::fuzz::read_sync_id(fd.get());
    std::string out = input;
    for (size_t at; (at = out.find("@ID@")) != std::string::npos;) {
      out.replace(at, 4, id);
    }
    ks::fuzz::send_and_close(std::move(fd), reinterpret_cast<const uint8_t*>(out.data()), out.size());
  });
  try {
    ks::guest::Channel ch = ks::guest::Channel::over(std::move(ours), "fuzz-port", ks::Millis(200));
    ch.execute("guest-fsfreeze-status", nlohmann::json::object(), ks::Millis(100));
    ch.execute("kata-snapshot-post-restore", {{"time", 1}, {"entropy", "AAAAAAAAAAAAAAAAAAAAAA=="}},
               ks::Millis(100));
  } catch (const ks::Error&) {
  }
  guest.join();
  return 0;
}
