// Fuzz target: the guest side of the helper protocol (kata-snapshot-helper's request loop),
// with inert effects: no input freezes, re-clocks or seeds the fuzzing host.
#include "guest-helper/agent/commands.hpp"
#include "tests/fuzz/fuzz_util.hpp"

#include <fcntl.h>
#include <memory>

namespace {

// Container mode with inert effects: images come from /dev/zero and go to /dev/null.
class InertContainers : public ks::agent::ContainerOps {
public:
  using Json = ks::agent::Json;
  Json list() override { return Json::object(); }
  Json dump(const std::string& id, const std::string&, std::chrono::seconds, const Heartbeat&) override {
    return {{"id", id}};
  }
  Json finish(const std::string& id, const std::string&) override { return {{"id", id}}; }
  int open_image(const std::string&, const std::string&, uint64_t& size) override {
    size = 3;
    return ::open("/dev/zero", O_RDONLY | O_CLOEXEC);
  }
  int create_image(const std::string&, const std::string&, uint64_t) override {
    return ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  }
  Json restore(const std::string& id, const Heartbeat&) override { return {{"id", id}}; }
  Json discard(const std::string& id) override { return {{"id", id}}; }
  void host_gone() override {}
};

} // namespace

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
                          .reseed_crng = [] { return true; },
                          .containers = std::make_shared<InertContainers>()});
  size_t replied = 0;
  agent.feed(std::string_view(reinterpret_cast<const char*>(data), size),
             [&](std::string_view reply) { replied += reply.size(); });
  agent.reset();
  return 0;
}
