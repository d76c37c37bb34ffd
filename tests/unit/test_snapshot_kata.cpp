// Kata sandbox lookup under a temporary root, with a scripted QMP server as the held socket.
#include "snapshot/kata.hpp"
#include "tests/support/fake_qmp.hpp"
#include "util/error.hpp"

#include <catch2/catch.hpp>
#include <filesystem>

using namespace ks;
using ks::test::FakeQmpServer;
using ks::test::TempDir;

TEST_CASE("kata: qmp.sock held by the shim and no extra-monitor.sock gives the configuration hint") {
  TempDir root;
  std::string vm_dir = root / "run/vc/vm/abc";
  std::filesystem::create_directories(vm_dir);
  // A monitor that accepts but never greets: what QEMU does while the shim is connected.
  FakeQmpServer held(vm_dir + "/qmp.sock", [](FakeQmpServer& s, int c) { s.read_line(c); });
  try {
    find_sandbox("abc", root.path());
    FAIL("found a usable monitor");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("qmp.sock is held by the Kata shim"));
    CHECK_THAT(e.hint(), Catch::Contains("extra_monitor_socket"));
  }
}

TEST_CASE("kata: an unknown sandbox and a bad id are told apart") {
  TempDir root;
  CHECK_THROWS_WITH(find_sandbox("nope", root.path()), Catch::Contains("no Kata sandbox nope"));
  try {
    find_sandbox("../x", root.path());
    FAIL("accepted a path as an id");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
  }
  CHECK_THROWS_WITH(resolve_qmp("/a.sock", "abc", root.path()), Catch::Contains("exactly one of"));
}

TEST_CASE("kata: a runtime-rs sandbox is found under /run/kata/ID with its ro shared directory") {
  TempDir root;
  std::string vm_dir = root / "run/kata/rs1";
  std::filesystem::create_directories(vm_dir);
  FakeQmpServer monitor(vm_dir + "/qmp.sock", FakeQmpServer::after_handshake([](FakeQmpServer&, int) {}));
  Sandbox s = find_sandbox("rs1", root.path());
  CHECK(s.runtime == "rs");
  CHECK(s.vm_dir == vm_dir);
  CHECK(s.qmp == vm_dir + "/qmp.sock");
  CHECK(s.shared_dir == root / "run/kata-containers/shared/sandboxes/rs1/ro");
  nlohmann::json record = sandbox_record(s, root.path());
  CHECK(record["runtime"] == "rs");
  CHECK_FALSE(record.contains("persist")); // runtime-rs keeps no persist.json
}
