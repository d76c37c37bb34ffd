// save -> kill -> load on a real guest: what the guest shows must carry on.
#include "tests/e2e/snapshot_steps.hpp"

#include <catch2/catch.hpp>

using namespace ks;
using namespace ks::test;

namespace {

// The multifd capability and channel count, to see that a save or load left them as it found them.
std::pair<bool, int> multifd_settings(qmp::Client& qmp) {
  bool on = false;
  for (const auto& cap : qmp.execute("query-migrate-capabilities")) {
    on = on || (cap["capability"] == "multifd" && cap["state"] == true);
  }
  return {on, qmp.execute("query-migrate-parameters").value("multifd-channels", -1)};
}

} // namespace

// The default layout is multifd: QEMU's main channel and one connection per multifd
// channel, each its own chunk series, loaded back over as many connections at once.
TEST_CASE("save, kill QEMU, load: the in-memory counter continues") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 3");
  std::string archive = vm.dir() + "/vm.ksnap";
  std::pair<bool, int> before;
  {
    qmp::Client qmp = vm.qmp();
    before = multifd_settings(qmp);
  }

  nlohmann::json saved = save_paused(vm.qmp_path(), archive, {"--chunk-size", "2"});
  CHECK(saved["vm_state"] == "paused");
  CHECK(saved["chunks"].get<int>() > 1);
  {
    qmp::Client qmp = vm.qmp();
    CHECK(multifd_settings(qmp) == before);
  }
  nlohmann::json manifest = nlohmann::json::parse(run_cli({"inspect", archive, "--json"}).output);
  CHECK(manifest["vmstate"]["layout"] == "multifd");
  CHECK(manifest["format_version"] == 3);
  CHECK(manifest["vmstate"]["channels"].get<int>() >= 2);
  CHECK_THAT(run_cli({"inspect", archive}).output, Catch::Contains("vmstate:  multifd layout ("));
  CHECK_THAT(run_command({"tar", "-tf", archive}).output, Catch::Contains("vmstate/multifd-1/000000.zst"));
  CHECK(run_cli({"verify", archive}).status == 0);
  Mark m = mark(vm);
  vm.kill();
  RestoredVm restored = load_ok(archive, vm.dir() + "/run");
  CHECK(restored.result()["status"] == "running");
  require_continues(vm, m);
  qmp::Client qmp = qmp::Client::connect(restored.qmp_path());
  CHECK(multifd_settings(qmp) == before); // the restored QEMU is left as a fresh one would be
}

TEST_CASE("save --vmstate mapped-ram, kill QEMU, load: the counter continues, QEMU left as it was") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 3");
  std::string archive = vm.dir() + "/vm.ksnap";
  nlohmann::json saved = save_paused(vm.qmp_path(), archive, {"--vmstate", "mapped-ram"});
  CHECK(saved["vm_state"] == "paused");
  {
    qmp::Client qmp = vm.qmp();
    CHECK(qmp.execute("query-fdsets").empty());
    for (const auto& cap : qmp.execute("query-migrate-capabilities")) {
      if (cap["capability"] == "mapped-ram") {
        CHECK(cap["state"] == false);
      }
    }
  }
  CommandResult inspect = run_cli({"inspect", archive, "--json"});
  REQUIRE(inspect.status == 0);
  nlohmann::json manifest = nlohmann::json::parse(inspect.output);
  CHECK(manifest["vmstate"]["layout"] == "mapped-ram");
  CHECK(manifest["format_version"] == 2);
  CHECK_THAT(run_cli({"inspect", archive}).output, Catch::Contains("vmstate:  mapped-ram layout"));
  // With --after resume the VM runs again once QEMU has written the state, before the
  // compression: it was paused for less than the whole save.
  vm.qmp().execute("cont");
  CommandResult resumed = run_cli(
    {"save", "--qmp", vm.qmp_path(), "-o", vm.dir() + "/resumed.ksnap", "--vmstate", "mapped-ram", "--json"});
  REQUIRE(resumed.status == 0);
  nlohmann::json r = nlohmann::json::parse(resumed.output);
  CHECK(r["vm_state"] == "running");
  REQUIRE(r["vm_paused_seconds"].is_number());
  CHECK(r["vm_paused_seconds"].get<double>() < r["seconds"].get<double>());
  save_paused(vm.qmp_path(), archive, {"--vmstate", "mapped-ram", "--force"});

  CHECK(run_cli({"verify", archive}).status == 0);
  Mark m = mark(vm);
  vm.kill();
  RestoredVm restored = load_ok(archive, vm.dir() + "/run");
  CHECK(restored.result()["status"] == "running");
  require_continues(vm, m);
}

TEST_CASE("two generations: save, load, save, load") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  // Generation 1 as the plain stream (format version 1), generation 2 as mapped-ram.
  save_paused(vm.qmp_path(), vm.dir() + "/gen1.ksnap", {"--vmstate", "stream"});
  CHECK(nlohmann::json::parse(
          run_cli({"inspect", vm.dir() + "/gen1.ksnap", "--json"}).output)["format_version"] == 1);
  Mark m1 = mark(vm);

  vm.kill();
  RestoredVm gen1 = load_ok(vm.dir() + "/gen1.ksnap", vm.dir() + "/run1");
  require_continues(vm, m1, 3);
  // The second generation in the other layout: a restored VM saves as mapped-ram too.
  save_paused(gen1.qmp_path(), vm.dir() + "/gen2.ksnap", {"--vmstate", "mapped-ram"});

  Mark m2 = mark(vm);
  CHECK(m2.tick >= m1.tick + 3);
  gen1.kill();
  RestoredVm gen2 = load_ok(vm.dir() + "/gen2.ksnap", vm.dir() + "/run2");
  require_continues(vm, m2, 3);
}

TEST_CASE("load --paused, then cont, then guest refresh") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  save_paused(vm.qmp_path(), vm.dir() + "/vm.ksnap");
  Mark m = mark(vm);
  vm.kill();
  RestoredVm restored = load_ok(vm.dir() + "/vm.ksnap", vm.dir() + "/run", {"--paused"});
  CHECK(restored.result()["status"] == "paused");
  CHECK_THAT(restored.result()["guest"].value("reason", ""), Catch::Contains("kata-snapshot guest refresh"));
  {
    qmp::Client qmp = qmp::Client::connect(restored.qmp_path());
    CHECK(qmp.execute("query-status")["status"] == "paused");
    CHECK(vm.console().size() == m.offset); // nothing ran
    qmp.execute("cont");
  }
  require_continues(vm, m);
  // What the paused load could not do: the clock and the RNG, now that the guest runs.
  CommandResult r = run_cli({"guest", "refresh", "--qmp", restored.qmp_path(), "--json"});
  INFO(r.error_output);
  REQUIRE(r.status == 0);
  nlohmann::json refresh = nlohmann::json::parse(r.output);
  CHECK(refresh["clock_set"] == true);
  CHECK(refresh["entropy_bytes"] == 64);
}

TEST_CASE("save -o - | load -") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  const TestEnv& env = test_env();
  // The source stays paused (--after pause) while the copy starts from the pipe.
  std::string script = env.cli + " save --qmp " + vm.qmp_path() + " -o - --after pause -q | " + env.cli +
                       " load - --run-dir " + vm.dir() + "/run --json --paused";
  CommandResult r = run_command({"bash", "-o", "pipefail", "-c", script}, Millis(300000));
  INFO(r.error_output);
  REQUIRE(r.status == 0);
  RestoredVm restored(nlohmann::json::parse(r.output));
  Mark m = mark(vm); // the source printed its last tick before pausing
  vm.kill();
  qmp::Client::connect(restored.qmp_path()).execute("cont");
  require_continues(vm, m);
}

// Stop mode freezes by default; a live save freezes when --quiesce required asks for it.
TEST_CASE("save --after quit of a frozen guest, then the load thaws it and its writer carries on") {
  std::string mode = GENERATE(as<std::string>{}, "stop", "live");
  GuestVm vm({.workload = "disk", .disk_mb = 32});
  vm.wait_console("ksnap: wrote 3\n");
  std::string archive = vm.dir() + "/vm.ksnap";
  std::vector<std::string> args = {"save",    "--qmp", vm.qmp_path(), "-o",     archive,
                                   "--after", "quit",  "--json",      "--mode", mode};
  if (mode == "live") {
    args.insert(args.end(), {"--quiesce", "required"});
  }
  CommandResult r = run_cli(args);
  INFO(r.error_output);
  REQUIRE(r.status == 0);
  nlohmann::json saved = nlohmann::json::parse(r.output);
  CHECK(saved["vm_state"] == "shut down");
  CHECK(saved["quiesce"]["method"] == "helper");
  CHECK(saved["quiesce"]["frozen_filesystems"].get<int>() >= 1); // ext4 on /data
  CHECK(r.error_output.find("warning") == std::string::npos);    // no thaw sent to a VM that is gone
  size_t offset = vm.console().size();
  RestoredVm restored = load_ok(archive, vm.dir() + "/run");
  // The snapshot holds a frozen guest: the post-restore step thaws it and writes resume.
  CHECK(restored.result()["guest"]["thawed"].get<int>() >= 1);
  vm.wait_console("ksnap: wrote", Millis(60000), offset);
}
