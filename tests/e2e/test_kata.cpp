// A VM laid out and launched as Kata's Go runtime does (QMP as -qmp unix:fd=3 held by the
// shim, extra-monitor.sock, virtiofsd --fd=3, -name sandbox-ID, memory-backend-file on
// /dev/shm): found by sandbox id, listed by ps, saved by id, restored, listed again.
#include "tests/e2e/snapshot_steps.hpp"

#include <catch2/catch.hpp>
#include <filesystem>

using namespace ks;
using namespace ks::test;
using Json = nlohmann::json;

namespace {

Json ps(const std::string& kata_root) {
  CommandResult r = run_cli({"ps", "--kata-root", kata_root, "--json"});
  INFO(r.error_output);
  REQUIRE(r.status == 0);
  return Json::parse(r.output);
}

const Json* find_sandbox(const Json& vms, const std::string& id) {
  for (const auto& v : vms) {
    if (v.value("sandbox", "") == id) {
      return &v;
    }
  }
  return nullptr;
}

} // namespace

TEST_CASE("kata: save --sandbox ID through extra-monitor.sock, load, and ps before and after") {
  const std::string id = "ksnap" + std::to_string(::getpid());
  GuestVm vm({.profile = Profile::kata, .workload = "share", .sandbox_id = id});
  vm.wait_console("ksnap: tick 2");

  Json before = ps(vm.kata_root());
  const Json* listed = find_sandbox(before, id);
  REQUIRE(listed != nullptr);
  CHECK((*listed)["pid"] == vm.qemu_pid());
  CHECK((*listed)["shares"] == Json::array({"kataShared"}));
  CHECK((*listed)["qmp"] == vm.qmp_path()); // extra-monitor.sock: the shim holds qmp.sock
  CHECK((*listed)["helper"] == "answers");

  std::string archive = vm.dir() + "/sandbox.ksnap";
  CommandResult saved = run_cli(
    {"save", "--sandbox", id, "--kata-root", vm.kata_root(), "-o", archive, "--after", "pause", "--json"});
  INFO(saved.error_output);
  REQUIRE(saved.status == 0);
  Mark m = mark(vm);
  Json manifest = Json::parse(run_cli({"inspect", archive, "--json"}).output);
  CHECK(manifest["shares"][0]["virtiofsd"]["args"][0] == "--fd=3");

  vm.kill();
  for (const auto& e : std::filesystem::directory_iterator(vm.share_dir())) {
    std::filesystem::remove_all(e.path()); // the runtime cleans up the shared directory
  }
  RestoredVm restored =
    load_ok(archive, vm.dir() + "/restored", {"--sandbox", id, "--virtiofsd", test_env().virtiofsd});
  require_continues(vm, m);
  Json after = ps(vm.kata_root());
  const Json* again = find_sandbox(after, id);
  REQUIRE(again != nullptr);
  CHECK((*again)["pid"] == restored.pid());
  CHECK((*again)["qmp_state"] == "ok");
}
