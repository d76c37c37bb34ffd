// Live saves on real guests: the guest keeps running while its snapshot is taken, and the
// archive is one consistent instant of memory, devices, virtiofsd and the share.
#include "tests/e2e/snapshot_steps.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

using namespace ks;
using namespace ks::test;
namespace fs = std::filesystem;

namespace {

// `save ARGS --json` run while the guest's console is watched: the result, and the longest
// time the guest went without printing a new tick while the save ran.
struct Watched {
  nlohmann::json result;
  double max_gap = 0;
};

Watched save_watching(const GuestVm& vm, const std::vector<std::string>& args) {
  SpawnOptions so;
  so.argv = {test_env().cli, "save", "--qmp", vm.qmp_path(), "--json"};
  so.argv.insert(so.argv.end(), args.begin(), args.end());
  so.stdout_path = vm.dir() + "/save.out";
  so.stderr_path = vm.dir() + "/save.err";
  fs::remove(so.stdout_path);
  auto last_change = std::chrono::steady_clock::now();
  long tick = vm.last_tick();
  Watched w;
  ChildProcess save = ChildProcess::spawn(so);
  while (save.running()) {
    std::this_thread::sleep_for(Millis(10));
    auto now = std::chrono::steady_clock::now();
    w.max_gap = std::max(w.max_gap, std::chrono::duration<double>(now - last_change).count());
    if (long t = vm.last_tick(); t != tick) {
      tick = t;
      last_change = now;
    }
  }
  auto status = save.wait(Deadline(Millis(1000)));
  INFO(read_file(so.stderr_path));
  REQUIRE(status);
  REQUIRE(*status == 0);
  w.result = nlohmann::json::parse(read_file(so.stdout_path));
  return w;
}

// Lines "j 1", "j 2", ... "j N" of a journal, each once and in order; returns N.
long unbroken_journal(const std::string& path) {
  std::istringstream in(read_file(path));
  std::string line;
  long n = 0;
  while (std::getline(in, line)) {
    INFO("journal line " << n + 1);
    REQUIRE(line == "j " + std::to_string(n + 1));
    ++n;
  }
  return n;
}

} // namespace

TEST_CASE("a live save: the guest keeps counting, and a load continues from the snapshot instant") {
  GuestVm vm({.memory_mb = 512});
  vm.wait_console("ksnap: tick 3");
  std::string archive = vm.dir() + "/live.ksnap";
  Watched w = save_watching(vm, {"-o", archive, "--mode", "live"});
  CHECK(w.result["mode"] == "live");
  CHECK(w.result["live"]["mechanism"] == "pre-copy");
  CHECK(w.result["vm_state"] == "running");
  REQUIRE(w.result["vm_paused_seconds"].is_number());
  CHECK(w.result["vm_paused_seconds"].get<double>() < 1.0);
  CHECK(w.max_gap < 1.0); // the counter prints every 0.2 s
  nlohmann::json manifest = nlohmann::json::parse(run_cli({"inspect", archive, "--json"}).output);
  CHECK(manifest["mode"] == "live");
  CHECK(run_cli({"verify", archive}).status == 0);

  // The instant is the final stop; with --after pause the VM stays there, so the last tick
  // it printed is the one the snapshot holds.
  nlohmann::json paused = save_paused(vm.qmp_path(), archive, {"--mode", "live", "--force"});
  CHECK(paused["mode"] == "live");
  CHECK(paused["vm_state"] == "paused");
  Mark m = mark(vm);
  vm.kill();
  RestoredVm restored = load_ok(archive, vm.dir() + "/run");
  require_continues(vm, m);
}

// Each layout places the shares' delta its own way: among multifd or stream chunks, or
// ahead of a mapped-ram file.
TEST_CASE("a live save of a virtio-fs guest: journal, share and checksums agree after the load") {
  std::string layout = GENERATE(as<std::string>{}, "multifd", "stream", "mapped-ram");
  INFO("--vmstate " << layout);
  GuestVm vm(live_share_guest(16, 42));
  vm.wait_console("ksnap: sum ok 1\n", Millis(120000));
  vm.wait_console("ksnap: rewrite 5\n");
  std::string archive = vm.dir() + "/live.ksnap";
  CommandResult r =
    run_cli({"save", "--qmp", vm.qmp_path(), "-o", archive, "--mode", "live", "--vmstate", layout, "--json"});
  INFO(r.error_output);
  REQUIRE(r.status == 0);
  nlohmann::json saved = nlohmann::json::parse(r.output);
  CHECK(saved["mode"] == "live");
  CHECK(saved["live"]["share_seconds"].is_number());
  nlohmann::json manifest = nlohmann::json::parse(run_cli({"inspect", archive, "--json"}).output);
  CHECK(manifest["format_version"] == 4);
  CHECK(manifest["shares"][0]["delta_member"] == "shares/kataShared.delta.tar.zst");
  CHECK(run_cli({"verify", archive}).status == 0);
  // The guest goes on writing after the instant: none of that may come back.
  long journal = std::stol(vm.wait_console("ksnap: journal ").substr(15));
  vm.wait_console("ksnap: journal " + std::to_string(journal + 10) + "\n");
  vm.kill();
  for (const auto& e : fs::directory_iterator(vm.share_dir())) {
    fs::remove_all(e.path());
  }
  size_t offset = vm.console().size();
  RestoredVm restored = load_ok(archive, vm.dir() + "/run");
  // Should the restored guest stall (seen once in many runs, on a loaded 2-core host), the
  // failure says what QEMU and virtiofsd were doing.
  auto state = [&] {
    std::string s;
    try {
      qmp::Client qmp = qmp::Client::connect(restored.qmp_path());
      s = "query-status: " + qmp.execute("query-status").dump() + "\n";
      s += qmp.execute("human-monitor-command", {{"command-line", "info registers"}})
             .get<std::string>()
             .substr(0, 400);
    } catch (const std::exception& e) {
      s = std::string("QMP: ") + e.what();
    }
    for (const auto& e : fs::directory_iterator(vm.dir() + "/run")) {
      if (e.path().extension() == ".log") {
        s += "\n" + e.path().filename().string() + ": " + log_tail(e.path(), 5);
      }
    }
    return s;
  };
  long first = 0;
  try {
    vm.wait_console("ksnap: sum ok", Millis(120000), offset); // a whole checksum after the load
    vm.wait_console("ksnap: rewrite", Millis(60000), offset);
    first = std::stol(vm.wait_console("ksnap: journal ", Millis(60000), offset).substr(15));
    vm.wait_console("ksnap: journal " + std::to_string(first + 5) + "\n", Millis(60000), offset);
  } catch (const std::exception& e) {
    FAIL(e.what() << "\nthe restored VM: " << state());
  }
  std::string after = vm.console().substr(offset);
  CHECK(after.find("BAD") == std::string::npos);
  CHECK(after.find("EIO") == std::string::npos);
  CHECK(unbroken_journal(vm.share_dir() + "/journal") >= first + 5);
}

TEST_CASE("auto mode saves a paused VM in stop mode and says why, live mode refuses it") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  vm.qmp().execute("stop");
  CommandResult live =
    run_cli({"save", "--qmp", vm.qmp_path(), "-o", vm.dir() + "/live.ksnap", "--mode", "live"});
  CHECK(live.status == 2);
  CHECK_THAT(live.error_output,
             Catch::StartsWith("kata-snapshot: error: cannot save this VM live: the VM is paused"));
  CHECK_FALSE(fs::exists(vm.dir() + "/live.ksnap"));
  CommandResult r = run_cli({"save", "--qmp", vm.qmp_path(), "-o", vm.dir() + "/vm.ksnap", "--json"});
  INFO(r.error_output);
  REQUIRE(r.status == 0);
  CHECK(nlohmann::json::parse(r.output)["mode"] == "stop");
  CHECK_THAT(r.error_output, Catch::Contains("notice: saving in stop mode: the VM is paused"));
  CHECK_FALSE(vm.qmp().execute("query-status")["running"].get<bool>()); // still stopped
  // QEMU leaves a VM it migrated while stopped in its postmigrate state, which it will not
  // migrate again: said plainly, with what to do.
  CommandResult again = run_cli({"save", "--qmp", vm.qmp_path(), "-o", vm.dir() + "/again.ksnap"});
  CHECK(again.status == 2);
  CHECK_THAT(again.error_output, Catch::Contains("postmigrate") && Catch::Contains("hint: "));
}

// Host to host through a pipe throttled to a few MB/s, so that the transfer takes seconds:
// the guest runs while most of it goes, and the pause it sees is the final stop plus the
// tail of the transfer. The source stays paused after the stop (the caller quits it).
TEST_CASE(
  "save --mode live --after pause -o - | throttled pipe | load -: the guest pauses only for the tail") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 3");
  const TestEnv& env = test_env();
  std::string script = env.cli + " save --qmp " + vm.qmp_path() +
                       " -o - --mode live --after pause -q | pv -q -L 3m | " + env.cli +
                       " load - --run-dir " + vm.dir() + "/run --json";
  SpawnOptions so;
  so.argv = {"bash", "-o", "pipefail", "-c", script};
  so.stdout_path = vm.dir() + "/load.json";
  so.stderr_path = vm.dir() + "/pipe.err";
  // Each tick's value and when the host saw it, from both VMs (they share the console file).
  std::vector<std::pair<long, std::chrono::steady_clock::time_point>> ticks;
  auto start = std::chrono::steady_clock::now();
  ChildProcess pipeline = ChildProcess::spawn(so);
  while (pipeline.running()) {
    std::this_thread::sleep_for(Millis(10));
    long t = vm.last_tick();
    if (ticks.empty() || t != ticks.back().first) {
      ticks.emplace_back(t, std::chrono::steady_clock::now());
    }
  }
  auto status = pipeline.wait(Deadline(Millis(1000)));
  INFO(read_file(vm.dir() + "/pipe.err"));
  REQUIRE(status);
  REQUIRE(*status == 0);
  double transfer = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RestoredVm restored(nlohmann::json::parse(read_file(vm.dir() + "/load.json")));
  {
    qmp::Client source = vm.qmp();
    CHECK_FALSE(source.execute("query-status")["running"].get<bool>()); // paused since the instant
  }
  Mark m = mark(vm);
  vm.kill(); // the load succeeded: the caller quits the source
  Deadline d(Millis(60000));
  while (ticks.back().first <= m.tick && !d.expired()) { // the restored guest's first tick
    std::this_thread::sleep_for(Millis(10));
    if (long t = vm.last_tick(); t != ticks.back().first) {
      ticks.emplace_back(t, std::chrono::steady_clock::now());
    }
  }
  auto first_seen = [&](const std::function<bool(long)>& pred) {
    auto it = std::find_if(ticks.begin(), ticks.end(), [&](const auto& p) { return pred(p.first); });
    REQUIRE(it != ticks.end());
    return it->second;
  };
  // The pause the guest saw: from the source's last tick to the restored guest's next one.
  double pause = std::chrono::duration<double>(first_seen([&](long t) { return t > m.tick; }) -
                                               first_seen([&](long t) { return t == m.tick; }))
                   .count();
  require_continues(vm, m); // it goes on from the source's last tick
  WARN("transfer " << transfer << " s, pause the guest saw about " << pause << " s");
  CHECK(transfer > 2.0);       // the throttle made the transfer take seconds
  CHECK(pause < transfer / 2); // and the guest ran through most of it
}

TEST_CASE("a live save that passes its bound on bytes fails with the reason, and the VM runs on") {
  GuestVm vm({.workload = "dirty"});
  vm.wait_console("ksnap: dirtied");
  nlohmann::json params;
  {
    qmp::Client qmp = vm.qmp();
    params = qmp.execute("query-migrate-parameters");
  }
  std::string archive = vm.dir() + "/vm.ksnap";
  // The guest holds about 45 MB that is not zero (kernel, initramfs, 16 MiB of random data
  // rewritten over and over): a bound of 24 MiB is passed during QEMU's first pass.
  CommandResult r = run_cli({"save", "--qmp", vm.qmp_path(), "-o", archive, "--mode", "live",
                             "--max-downtime", "1", "--max-transfer", "24"});
  INFO(r.error_output);
  CHECK(r.status == 1);
  CHECK_THAT(r.error_output, Catch::StartsWith("kata-snapshot: error: the live save passed its bound during "
                                               "QEMU's first pass over memory: QEMU sent ") &&
                               Catch::Contains("hint: raise --max-transfer"));
  CHECK_FALSE(fs::exists(archive));
  {
    qmp::Client qmp = vm.qmp();
    CHECK(qmp.execute("query-status")["status"] == "running");
    CHECK(qmp.execute("query-migrate-parameters") == params);
  }
  size_t offset = vm.console().size();
  vm.wait_console("ksnap: dirtied", Millis(60000), offset); // and it goes on
}
