// virtio-fs across a snapshot: the daemon's state (open files) and the shared directory's
// contents, captured at the same instant, restored in place and into another directory.
#include "tests/e2e/snapshot_steps.hpp"
#include "util/fd.hpp"
#include "util/strings.hpp"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <filesystem>
#include <regex>

using namespace ks;
using namespace ks::test;
namespace fs = std::filesystem;

TEST_CASE("virtio-fs: open files carry on after save, kill, empty directory, load") {
  GuestVm vm(vfs_guest());
  std::string archive = vm.dir() + "/vm.ksnap";
  VfsMark m = save_vfs(vm, archive);
  nlohmann::json manifest = nlohmann::json::parse(run_cli({"inspect", archive, "--json"}).output);
  REQUIRE(manifest["shares"].size() == 1);
  CHECK(manifest["shares"][0]["tag"] == "kataShared");
  CHECK(manifest["shares"][0]["source_dir"] == vm.share_dir());
  CHECK(manifest["shares"][0]["lost_on_restore"] == nlohmann::json::array({vm.share_dir() + "/deleted.tmp"}));

  vm.kill(); // QEMU and virtiofsd
  fs::remove_all(vm.share_dir());
  fs::create_directories(vm.share_dir()); // emptied, as after a crash or on a new host
  RestoredVm restored = load_ok(archive, vm.dir() + "/run", {"--virtiofsd", test_env().virtiofsd});
  CHECK(restored.result()["virtiofsd_pids"].size() == 1);
  require_vfs_continues(vm, m, vm.share_dir());
}

TEST_CASE("virtio-fs: restored into a different directory, as on another host") {
  GuestVm vm(vfs_guest());
  std::string archive = vm.dir() + "/vm.ksnap";
  VfsMark m = save_vfs(vm, archive);
  vm.kill();
  std::string elsewhere = vm.dir() + "/other-host-share";
  RestoredVm restored =
    load_ok(archive, vm.dir() + "/run",
            {"--virtiofsd", test_env().virtiofsd, "--share-dir", "kataShared=" + elsewhere});
  require_vfs_continues(vm, m, elsewhere);
  CHECK(read_file(elsewhere + "/hello.txt") == "hello from the host\n");
}

TEST_CASE("virtio-fs: a non-empty target directory is refused without --force") {
  GuestVm vm({.profile = Profile::kata, .workload = "share"});
  vm.wait_console("ksnap: share mounted");
  std::string archive = vm.dir() + "/vm.ksnap";
  save_paused(vm.qmp_path(), archive);
  vm.kill();
  CommandResult r = run_cli({"load", archive, "--run-dir", vm.dir() + "/run"}); // hello.txt is still there
  CHECK(r.status == 1);
  CHECK_THAT(r.error_output, Catch::Contains(vm.share_dir() + " (virtio-fs share kataShared) is not empty") &&
                               Catch::Contains("hint: pass --force"));
  CHECK(processes_with(vm.dir() + "/run").empty());
}

TEST_CASE("virtio-fs: a virtiofsd that cannot migrate is refused before the VM is paused") {
  // An "old" virtiofsd: the real binary with its migration option renamed (a same-length patch),
  // as the C virtiofsd of QEMU <= 7.2 has no migration support at all.
  test_env(); // skipped, not failed, where there is no QEMU or no test guest
  TempDir bin;
  std::string prefix = std::string(KSNAP_SOURCE_DIR) + "/.cache/virtiofsd";
  if (!fs::exists(prefix + "/usr/libexec/virtiofsd")) {
    skip("virtiofsd is not installed under " + prefix + " (run `make test`, which installs it)");
  }
  std::string patched = bin / "virtiofsd";
  std::string code = read_file(prefix + "/usr/libexec/virtiofsd");
  for (size_t pos = 0; (pos = code.find("migration-mode", pos)) != std::string::npos;) {
    code.replace(pos, 14, "migratXon-mode");
  }
  write_all(open_file(patched, O_WRONLY | O_CREAT | O_TRUNC, 0755).get(), code, patched);
  std::string lib = prefix + "/usr/lib/x86_64-linux-gnu";
  GuestVm vm({.profile = Profile::kata,
              .workload = "share",
              .virtiofsd_cmd = {lib + "/ld-linux-x86-64.so.2", "--library-path", lib, patched}});
  vm.wait_console("ksnap: share mounted");
  CommandResult r = run_cli({"save", "--qmp", vm.qmp_path(), "-o", vm.dir() + "/vm.ksnap"});
  CHECK(r.status == 1);
  CHECK_THAT(r.error_output,
             Catch::Contains("cannot migrate its state") && Catch::Contains("hint: run the Rust virtiofsd"));
  qmp::Client qmp = vm.qmp();
  CHECK(qmp.execute("query-status")["status"] == "running");
  CHECK(qmp.execute("query-migrate").value("status", "none") == "none");
  CHECK_FALSE(fs::exists(vm.dir() + "/vm.ksnap"));
}
