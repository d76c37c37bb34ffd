// The guest helper on a real guest: freeze blocks writers, thaw releases them, auto-thaw,
// a silent helper, a dirty channel, hot-adding the port, and the post-restore refresh.
#include "guest-helper/channel.hpp"
#include "tests/e2e/snapshot_steps.hpp"
#include "util/unix_socket.hpp"

#include <catch2/catch.hpp>
#include <regex>
#include <sys/socket.h>
#include <thread>

using namespace ks;
using namespace ks::test;
using Json = nlohmann::json;

namespace {

long last_write(const GuestVm& vm) {
  static const std::regex re(R"(ksnap: wrote (\d+))");
  std::string text = vm.console();
  long n = -1;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) {
    n = std::stol((*it)[1]);
  }
  return n;
}

} // namespace

TEST_CASE("guest freeze blocks a writer on ext4/virtio-blk until thaw") {
  GuestVm vm({.workload = "disk", .disk_mb = 32});
  vm.wait_console("ksnap: wrote 3\n");
  Json frozen = cli_json({"guest", "freeze", "--qmp", vm.qmp_path(), "--json"});
  CHECK(frozen["status"] == "frozen");
  CHECK(frozen["filesystems"].get<int>() >= 1); // /data (ext4); virtio-fs and tmpfs only sync
  CHECK(cli_json({"guest", "status", "--qmp", vm.qmp_path(), "--json"})["status"] == "frozen");
  long at_freeze = last_write(vm);
  // The writer makes a write every 0.2 s when it can; over 2 s it must make none.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  CHECK(last_write(vm) <= at_freeze + 1); // one write may have been past the freeze already
  Json thawed = cli_json({"guest", "thaw", "--qmp", vm.qmp_path(), "--json"});
  CHECK(thawed["filesystems"].get<int>() == frozen["filesystems"].get<int>());
  vm.wait_console("ksnap: wrote " + std::to_string(at_freeze + 3) + "\n");
  CHECK(cli_json({"guest", "status", "--qmp", vm.qmp_path(), "--json"})["status"] == "thawed");
}

TEST_CASE("a freeze thaws itself after its timeout") {
  GuestVm vm({.workload = "disk", .disk_mb = 32});
  vm.wait_console("ksnap: wrote 2\n");
  cli_json({"guest", "freeze", "--qmp", vm.qmp_path(), "--timeout", "2", "--json"});
  long at_freeze = last_write(vm);
  vm.wait_console("no thaw arrived: thawing", Millis(30000));
  vm.wait_console("ksnap: wrote " + std::to_string(at_freeze + 3) + "\n");
  CHECK(cli_json({"guest", "status", "--qmp", vm.qmp_path(), "--json"})["status"] == "thawed");
}

TEST_CASE("a freeze survives a restart of the helper, which can still thaw") {
  GuestVm vm({.workload = "disk", .kernel_args = {"ksnap.helper=restart-when-frozen"}, .disk_mb = 32});
  vm.wait_console("ksnap: wrote 2\n");
  Json frozen = cli_json({"guest", "freeze", "--qmp", vm.qmp_path(), "--json"});
  REQUIRE(frozen["filesystems"].get<int>() >= 1);
  vm.wait_console("ksnap: helper restarted");
  vm.wait_console("resuming a freeze of"); // the new helper read the state file
  CHECK(cli_json({"guest", "status", "--qmp", vm.qmp_path(), "--json"})["status"] == "frozen");
  long at_thaw = last_write(vm);
  Json thawed = cli_json({"guest", "thaw", "--qmp", vm.qmp_path(), "--json"});
  CHECK(thawed["filesystems"] == frozen["filesystems"]);
  vm.wait_console("ksnap: wrote " + std::to_string(at_thaw + 2) + "\n");
}

TEST_CASE("a silent helper: the host gives up within 5 s with a clear error") {

  GuestVm vm({.workload = "idle", .kernel_args = {"ksnap.helper=stopped"}});
  vm.wait_console("ksnap: helper stopped");
  auto start = std::chrono::steady_clock::now();
  CommandResult r = run_cli({"guest", "ping", "--qmp", vm.qmp_path()});
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(r.status == 1);
  CHECK_THAT(r.error_output, Catch::StartsWith("kata-snapshot: error: the guest helper did not answer") &&
                               Catch::Contains("hint: is kata-snapshot-helper"));
  CHECK(took < 7.0); // 5 s deadline plus QMP set-up
}

TEST_CASE("a dirty channel: garbage and a stale reply are skipped by the resync") {
  GuestVm vm({.workload = "idle"});
  guest::Channel::connect(vm.dir() + "/helper.sock", Millis(30000)); // the helper is up
  Fd raw = connect_unix(vm.dir() + "/helper.sock", Deadline(Millis(5000)));
  // A request whose reply nobody reads (stale), then half a request (garbage in the agent).
  std::string dirt = "{\"execute\": \"guest-info\"}\n{\"execute\": \"guest-pi";
  REQUIRE(::send(raw.get(), dirt.data(), dirt.size(), 0) == static_cast<ssize_t>(dirt.size()));
  REQUIRE(wait_readable(raw.get(), Deadline(Millis(5000)))); // the stale reply is waiting
  guest::Channel ch = guest::Channel::over(std::move(raw), "dirty channel");
  CHECK(ch.execute("guest-ping").is_object());
  CHECK(ch.execute("guest-fsfreeze-status") == "thawed");
}

TEST_CASE("a VM without the helper port gets one hot-added and removed again") {
  GuestVm vm({.workload = "idle", .helper_port = false});
  Json before = vm.qmp().execute("qom-list", {{"path", "/machine/peripheral"}});
  Json ping = cli_json({"guest", "ping", "--qmp", vm.qmp_path(), "--json"});
  CHECK(ping["status"] == "ok");
  CHECK(ping["hot_added_port"] == true);
  Json after = vm.qmp().execute("qom-list", {{"path", "/machine/peripheral"}});
  CHECK(after == before);
  CHECK(vm.qmp().execute("query-chardev").dump().find("ksnap-helper0") == std::string::npos);
}

TEST_CASE("after a load the guest clock is within 1 s of the host and entropy was accepted") {
  GuestVm vm({.workload = "clock"});
  vm.wait_console("ksnap: clock");
  std::string archive = vm.dir() + "/vm.ksnap";
  save_paused(vm.qmp_path(), archive);
  vm.kill();
  std::this_thread::sleep_for(std::chrono::seconds(3)); // the snapshot's clock falls behind
  RestoredVm restored = load_ok(archive, vm.dir() + "/run");
  const Json& g = restored.result()["guest"];
  INFO(g.dump());
  REQUIRE(g["refreshed"] == true);
  CHECK(g["clock_delta_ms"].get<long>() >= 2000);
  CHECK(g["entropy_bytes"] == 64);
  CHECK(g["crng_reseeded"] == true);
  // A line printed just before the refresh may still reach the console file after this
  // point: skip the first clock line and check the next one.
  size_t offset = vm.console().size();
  vm.wait_console("ksnap: clock", Millis(30000), offset);
  offset = vm.console().size();
  std::string line = vm.wait_console("ksnap: clock", Millis(30000), offset);

  long guest_now = std::stol(line.substr(line.rfind(' ') + 1));
  long host_now = static_cast<long>(std::time(nullptr));
  CHECK(std::labs(host_now - guest_now) <= 1);
}
