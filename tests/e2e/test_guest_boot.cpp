// Both guest profiles boot; the Kata-like one mounts virtio-fs and reads a host file; the
// helper answers from inside the guest over virtio-serial.
#include "guest-helper/channel.hpp"
#include "tests/e2e/guest_vm.hpp"

#include <catch2/catch.hpp>

using namespace ks;
using namespace ks::test;

TEST_CASE("guest boots in the plain profile and counts") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 3");
  CHECK(vm.last_tick() >= 3);
}

TEST_CASE("guest boots in the Kata-like profile and reads a host file over virtio-fs") {
  GuestVm vm({.profile = Profile::kata, .workload = "share"});
  CHECK(vm.wait_console("ksnap: share mounted").size() > 0);
  CHECK_THAT(vm.wait_console("ksnap: share says"), Catch::Contains("hello from the host"));
}

TEST_CASE("helper ping round trip from the host over virtio-serial") {
  GuestVm vm({.workload = "idle"});
  {
    // QEMU's chardev serves one client at a time: this one must be gone before the CLI's.
    guest::Channel ch = guest::Channel::connect(vm.dir() + "/helper.sock", Millis(30000));
    CHECK(ch.execute("guest-ping").is_object());
    CHECK_THAT(ch.execute("guest-info")["version"].get<std::string>(), Catch::StartsWith("0."));
  }

  CommandResult r = run_cli({"guest", "ping", "--qmp", vm.qmp_path(), "--json"});
  INFO(r.error_output);
  REQUIRE(r.status == 0);
  CHECK(nlohmann::json::parse(r.output)["status"] == "ok");
}
