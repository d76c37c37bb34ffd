// The QMP client against a real QEMU running the test guest.
#include "tests/e2e/guest_vm.hpp"
#include "util/fd.hpp"

#include <catch2/catch.hpp>

using namespace ks;
using namespace ks::test;

TEST_CASE("qmp against real QEMU: version, stop/cont events, getfd, command errors") {
  GuestVm vm({});
  qmp::Client qmp = vm.qmp();
  CHECK(qmp.peer_pid() == vm.qemu_pid());

  qmp::Json v = qmp.execute("query-version");
  CHECK(v["qemu"]["major"].get<int>() >= 10);

  qmp.execute("stop");
  CHECK(qmp.wait_event("STOP", nullptr, Millis(5000)));
  CHECK(qmp.execute("query-status")["status"] == "paused");
  qmp.execute("cont");
  CHECK(qmp.wait_event("RESUME", nullptr, Millis(5000)));
  CHECK(qmp.execute("query-status")["status"] == "running");

  Pipe p = make_pipe();
  qmp.send_fd("test-pipe", p.write.get());
  qmp.execute("closefd", {{"fdname", "test-pipe"}});

  try {
    qmp.execute("device_del", {{"id", "no-such-device"}});
    FAIL("device_del of a missing device succeeded");
  } catch (const qmp::CommandError& e) {
    CHECK(e.error_class() == "DeviceNotFound");
    CHECK_THAT(e.desc(), Catch::Contains("no-such-device"));
  }
}
