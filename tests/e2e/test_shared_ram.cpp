// The shared-ram layout on real guests: a Kata-shaped VM's memory (a memory-backend-file with
// share=on) read in place while the VM is stopped, and written back into the new QEMU's file.
#include "tests/e2e/registry_server.hpp"
#include "tests/e2e/snapshot_steps.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <sys/stat.h>

using namespace ks;
using namespace ks::test;
namespace fs = std::filesystem;

namespace {

// The bytes the guest RAM file of QEMU PID holds (its memory-backend-file dimm1, created
// in /dev/shm and unlinked): untouched guest memory is a hole and takes none.
uint64_t ram_file_allocated(pid_t pid) {
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    std::error_code ec;
    std::string target = fs::read_symlink(e.path(), ec).string();
    struct stat st {};
    if (target.starts_with("/dev/shm/qemu_back_mem.dimm1") && ::stat(e.path().c_str(), &st) == 0) {
      return static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  FAIL("QEMU " << pid << " has no open /dev/shm/qemu_back_mem.dimm1 file");
  return 0;
}

} // namespace

TEST_CASE(
  "shared-ram: a Kata guest saved twice into a repository in stop mode, then loaded, and its open files "
  "carry on") {
  GuestVm vm(vfs_guest());
  std::string repo = "oci:" + vm.dir() + "/repo";
  uint64_t allocated = ram_file_allocated(vm.qemu_pid());
  save_vfs(vm, repo + ":one", {"--mode", "stop"});
  // Reading the memory allocates none of the guest's untouched pages (holes stay holes);
  // what grows is what the guest itself touched until the save paused it.
  INFO("guest RAM file: " << allocated << " bytes allocated before the save, "
                          << ram_file_allocated(vm.qemu_pid()) << " after");
  CHECK(ram_file_allocated(vm.qemu_pid()) < allocated + (2u << 20));
  nlohmann::json manifest = cli_json({"inspect", repo + ":one", "--json"});
  CHECK(manifest["format_version"] == 8);
  CHECK(manifest["vmstate"]["layout"] == "shared-ram");
  REQUIRE(manifest["vmstate"]["memory"].size() == 1);
  CHECK(manifest["vmstate"]["memory"][0]["id"] == "dimm1");
  CHECK(manifest["vmstate"]["memory"][0]["bytes"] == 256ull << 20);
  CHECK_THAT(run_cli({"inspect", repo + ":one"}).output, Catch::Contains("vmstate:  shared-ram layout") &&
                                                           Catch::Contains("memory block dimm1: 256.0 MiB"));

  vm.qmp().execute("cont");
  // Live mode cannot read memory in place: refused before anything is paused.
  CommandResult live = run_cli({"save", "--qmp", vm.qmp_path(), "-o", vm.dir() + "/live.ksnap", "--mode",
                                "live", "--vmstate", "shared-ram"});
  CHECK(live.status == 2);
  CHECK_THAT(live.error_output, Catch::Contains("cannot be live"));
  CHECK_FALSE(fs::exists(vm.dir() + "/live.ksnap"));

  Mark before = mark(vm);
  vm.wait_console("ksnap: appended", Millis(30000), before.offset);
  VfsMark m = save_vfs(vm, repo + ":two", {"--mode", "stop"});
  nlohmann::json list = cli_json({"list", repo, "--json"})["snapshots"];
  REQUIRE(list.size() == 2);
  INFO("the second snapshot holds " << list[1]["unique_size"] << " bytes of its own, the first "
                                    << list[0]["size"]);
  CHECK(list[1]["unique_size"].get<uint64_t>() < list[0]["size"].get<uint64_t>() / 3);
  CHECK(cli_json({"check", repo, "--read-data", "--json"})["ok"] == true);

  // A .ksnap of it (copy is lossless) verifies, and is what is loaded.
  std::string archive = vm.dir() + "/two.ksnap";
  cli_json({"copy", repo + ":two", archive, "--json"});
  CHECK(run_cli({"verify", archive}).status == 0);
  vm.kill();
  fs::remove_all(vm.share_dir());
  fs::create_directories(vm.share_dir());
  RestoredVm restored = load_ok(archive, vm.dir() + "/run", {"--virtiofsd", test_env().virtiofsd});
  require_vfs_continues(vm, m, vm.share_dir());
}

TEST_CASE("shared-ram: a VM whose memory is private to QEMU is refused with the reason, and keeps running") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  std::string out = vm.dir() + "/vm.ksnap";
  CommandResult r =
    run_cli({"save", "--qmp", vm.qmp_path(), "-o", out, "--mode", "stop", "--vmstate", "shared-ram"});
  CHECK(r.status == 2);
  CHECK_THAT(r.error_output, Catch::Contains("no memory-backend-file with share=on"));
  CHECK_FALSE(fs::exists(out));
  CHECK(vm.qmp().execute("query-status")["running"] == true);
  // Into a repository, auto falls back to mapped-ram for such a VM.
  std::string repo = "oci:" + vm.dir() + "/repo:a";
  save_paused(vm.qmp_path(), repo, {"--mode", "stop"});
  CHECK(cli_json({"inspect", repo, "--json"})["vmstate"]["layout"] == "mapped-ram");
}

TEST_CASE("shared-ram: a save that fails, is stopped or is killed while reading memory puts QEMU back") {
  GuestVm vm({.profile = Profile::kata});
  vm.wait_console("ksnap: tick 2");
  MigrationSettings before;
  {
    qmp::Client qmp = vm.qmp();
    before = MigrationSettings::of(qmp);
  }
  std::string repo = "oci:" + vm.dir() + "/repo";
  const std::string watchdog = std::string("watchdog\0--fd\0003\0--qmp\0", 22) + vm.qmp_path();
  save_paused(vm.qmp_path(), repo + ":ok", {"--mode", "stop"});
  vm.qmp().execute("cont");
  for (const std::string step : {"mid-stream", "stream"}) {
    for (const std::string action : {"error", "sigterm", "sigkill"}) {
      INFO("KSNAP_FAULT=" << step << ":" << action);
      CommandResult r = run_command({"env", "KSNAP_FAULT=" + step + ":" + action, test_env().cli, "save",
                                     "--qmp", vm.qmp_path(), "-o", repo + ":t", "--mode", "stop"},
                                    Millis(120000));
      INFO(r.error_output);
      CHECK(r.status != 0);
      wait_until([&] { return processes_with(watchdog).empty(); }); // a killed save's watchdog ends
      {
        qmp::Client qmp = vm.qmp();
        CHECK(qmp.execute("query-status")["status"] == "running");
        CHECK(MigrationSettings::of(qmp) == before); // x-ignore-shared off again
      }
      check_thawed(vm);
      CHECK_THAT(run_cli({"inspect", repo + ":t"}).error_output, Catch::Contains("no snapshot tagged t"));
      CHECK(run_cli({"verify", repo + ":ok"}).status == 0); // the older snapshot is intact
    }
  }
  CHECK(cli_json({"check", repo, "--read-data", "--json"})["ok"] == true); // what they left is only garbage
  long t = vm.last_tick();
  vm.wait_console("ksnap: tick " + std::to_string(t + 2) + "\n"); // the guest still counts
}

TEST_CASE("shared-ram: a Kata guest saved straight to a registry in stop mode loads from it, its memory "
          "going from the registry into the new QEMU's memory file") {
  GuestVm vm(vfs_guest());
  TestRegistry registry(vm.dir() + "/registry");
  const std::string ref = registry.ref("backups/sandbox:stop");
  VfsMark m = save_vfs(vm, ref, with({"--mode", "stop"}, registry.flags()));
  nlohmann::json manifest = cli_json(with({"inspect", ref, "--json"}, registry.flags()));
  CHECK(manifest["vmstate"]["layout"] == "shared-ram");
  vm.kill();
  fs::remove_all(vm.share_dir());
  fs::create_directories(vm.share_dir());
  RestoredVm restored =
    load_ok(ref, vm.dir() + "/run", with({"--virtiofsd", test_env().virtiofsd}, registry.flags()));
  require_vfs_continues(vm, m, vm.share_dir());
}
