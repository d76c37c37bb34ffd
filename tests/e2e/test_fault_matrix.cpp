// The fault matrix: KSNAP_FAULT makes a save or a load fail, get SIGTERM or get SIGKILL at
// each of its steps (the names -v prints, and the middle of the stream). After every case:
// the documented exit code and one error line; the source VM running and its guest thawed
// with QEMU's migration settings as before; no snapshot under the final name unless it was
// committed (and then it verifies); an older snapshot intact; no temp file; no QEMU,
// virtiofsd or watchdog left over.
#include "tests/e2e/snapshot_steps.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <thread>

using namespace ks;
using namespace ks::test;
namespace fs = std::filesystem;

namespace {

const std::vector<std::string> k_actions = {"error", "sigterm", "sigkill"};

CommandResult run_with_fault(const std::string& fault, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"env", "KSNAP_FAULT=" + fault, test_env().cli};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, Millis(120000));
}

// The exit the action makes: an error (1, one "error:" line naming the fault), an interrupt
// (1, "interrupted by SIGTERM") unless the save was past its last check (0), or death (137).
void check_exit(const CommandResult& r, const std::string& step, const std::string& action) {
  INFO(r.error_output);
  if (action == "sigkill") {
    CHECK(r.status == 128 + SIGKILL);
    return;
  }
  if (action == "sigterm" && r.status == 0) {
    return;
  }
  CHECK(r.status == 1);
  std::string expected = action == "error"
                           ? "kata-snapshot: error: injected fault after step \"" + step + "\""
                           : "kata-snapshot: error: interrupted by SIGTERM";
  CHECK_THAT(r.error_output, Catch::Contains(expected));
}

// Waits (20 s at most) until no process has NEEDLE in its command line.
bool gone(const std::string& needle) {
  Deadline d(Millis(20000));
  while (!processes_with(needle).empty() && !d.expired()) {
    std::this_thread::sleep_for(Millis(50));
  }
  return processes_with(needle).empty();
}

std::vector<std::string> temp_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().find(".tmp-") != std::string::npos) {
      out.push_back(e.path().filename());
    }
  }
  return out;
}

} // namespace

TEST_CASE("fault matrix: a save that fails, is stopped or is killed at any step loses nothing") {
  GuestVm vm({.profile = Profile::kata});
  vm.wait_console("ksnap: tick 2");
  const std::string older = vm.dir() + "/older.ksnap";
  REQUIRE(run_cli({"save", "--qmp", vm.qmp_path(), "-o", older}).status == 0);
  const std::string older_bytes = read_file(older);
  MigrationSettings before;
  {
    qmp::Client qmp = vm.qmp();
    before = MigrationSettings::of(qmp);
  }
  const std::string out = vm.dir() + "/fault.ksnap";
  const std::string watchdog = std::string("watchdog\0--fd\0003\0--qmp\0", 22) + vm.qmp_path();
  for (const std::string step : {"discover", "guard", "preflight", "quiesce", "pause+capture", "mid-stream",
                                 "stream", "commit", "resume"}) {
    for (const auto& action : k_actions) {
      INFO("KSNAP_FAULT=" << step << ":" << action);
      CommandResult r = run_with_fault(step + ":" + action, {"save", "--qmp", vm.qmp_path(), "-o", out});
      check_exit(r, step, action);
      CHECK(gone(watchdog));
      {
        qmp::Client qmp = vm.qmp(); // one client at a time: closed before `guest status`
        CHECK(qmp.execute("query-status")["status"] == "running");
        CHECK(MigrationSettings::of(qmp) == before);
      }
      check_thawed(vm);
      CHECK(temp_files(vm.dir()).empty());
      bool committed = step == "commit" || step == "resume" || r.status == 0;
      if (committed) { // what a step after the commit leaves: a whole snapshot
        CHECK(run_cli({"verify", out}).status == 0);
      } else {
        CHECK_FALSE(fs::exists(out));
      }
      fs::remove(out);
      CHECK(read_file(older) == older_bytes);
    }
  }
  long t = vm.last_tick();
  vm.wait_console("ksnap: tick " + std::to_string(t + 2) + "\n"); // the guest still counts
  CHECK(run_cli({"verify", older}).status == 0);
}

TEST_CASE("fault matrix: a load that fails, is stopped or is killed at any step leaves nothing running") {
  GuestVm vm({.profile = Profile::kata});
  vm.wait_console("ksnap: tick 2");
  const std::string archive = vm.dir() + "/vm.ksnap";
  save_paused(vm.qmp_path(), archive);
  vm.kill();
  for (const std::string step : {"manifest", "shares", "start qemu", "host check", "staged", "mid-stream",
                                 "stream", "resume", "guest refresh"}) {
    for (const auto& action : k_actions) {
      INFO("KSNAP_FAULT=" << step << ":" << action);
      for (const auto& e : fs::directory_iterator(vm.share_dir())) {
        fs::remove_all(e.path());
      }
      std::string run_dir = vm.dir() + "/run-" + std::to_string(std::hash<std::string>()(step + action));
      CommandResult r = run_with_fault(step + ":" + action, {"load", archive, "--run-dir", run_dir});
      check_exit(r, step, action);
      if (r.status == 0) { // SIGTERM after the last check: the VM was restored; stop it
        for (int pid : processes_with(run_dir)) {
          ::kill(pid, SIGKILL);
        }
      }
      CHECK(gone(run_dir));      // QEMU, virtiofsd and the watchdog
      if (fs::exists(run_dir)) { // its logs stay; no socket does
        for (const auto& e : fs::directory_iterator(run_dir)) {
          INFO("left in the run directory: " << e.path());
          CHECK_FALSE(e.is_socket());
        }
      }
      if (action == "sigkill" && step != "manifest" && step != "shares") {
        CHECK_THAT(r.error_output, Catch::Contains("watchdog: the load into " + run_dir + " died"));
      }
    }
  }
  // And after all that, the snapshot loads.
  for (const auto& e : fs::directory_iterator(vm.share_dir())) {
    fs::remove_all(e.path());
  }
  RestoredVm restored = load_ok(archive, vm.dir() + "/run");
  long t = vm.last_tick();
  vm.wait_console("ksnap: tick " + std::to_string(t + 2) + "\n");
}
