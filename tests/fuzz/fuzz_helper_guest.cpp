// Fuzz target: the guest side of the helper protocol (kata-snapshot-helper's request loop),
// with inert effects: no input freezes, re-clocks or seeds the fuzzing host.
#include "guest-helper/agent/commands.hpp"
#include "tests/fuzz/fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ks::fuzz::setup();
  bool frozen = false;
  ks::agent::Agent agent({.freeze =
                            [&](std::chrono::seconds) {
                              frozen = true;
                              return 1;
                            },
                          .thaw =
                            [&] {
                              bool was = frozen;
                              frozen = false;
                              return was ? 1 : 0;
                            },
                          .frozen = [&] { return frozen; },
                          .set_clock = [](int64_t) { return int64_t{0}; },
                          .add_entropy = [](const std::string&) {},
                          .reseed_crng = [] { return true; }});
  size_t replied = 0;
  agent.feed(std::string_view(reinterpret_cast<const char*>(data), size),
             [&](const std::string& reply) { replied += reply.size(); });
  return 0;
}
