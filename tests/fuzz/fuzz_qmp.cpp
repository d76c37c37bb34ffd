// Fuzz target: the QMP client reading what the other end of the monitor socket sends:
// greeting, capabilities reply, events interleaved with replies, then two commands.
#include "qmp/qmp_client.hpp"
#include "tests/fuzz/fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ks::fuzz::setup();
  auto [ours, theirs] = ks::fuzz::socket_pair();
  ks::fuzz::send_and_close(std::move(theirs), data, size);
  try {
    ks::qmp::Client c = ks::qmp::Client::over(std::move(ours), "fuzz.sock", ks::Millis(100));
    c.execute("query-status", nlohmann::json::object(), ks::Millis(100));
    c.execute("query-migrate", nlohmann::json::object(), ks::Millis(100));
  } catch (const ks::Error&) {
  }
  return 0;
}
