// virtiofsd answers FUSE requests on a worker thread, and when QEMU stops its device it does
// not wait for the requests that worker holds: it answers them after the stop
// (snapshot/vhost_inflight.hpp). A snapshot that misses those answers leaves the restored
// guest waiting on them forever. Stop-mode saves wait for the answers before QEMU reads
// memory; live saves take the switchover again. A real virtiofsd gives these cases only by
// chance, so the test in CI pretends them with KSNAP_FAULT.
//
// The reproduction, hidden from CI ("[.][starved]": run it with e2e_tests "[starved]"):
// virtiofsd under SCHED_IDLE next to two busy loops, so that its worker often holds a request
// at the stop. 6 stop-mode and 6 live saves, then both loaded. It still ends with a stalled
// guest in about one run of three: a second stall, not yet explained (docs/live-mode.md).
#include "tests/e2e/snapshot_steps.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

using namespace ks;
using namespace ks::test;
namespace fs = std::filesystem;

namespace {

// Two busy loops, for as long as this lives.
class BusyLoops {
public:
  BusyLoops() {
    for (int i = 0; i < 2; ++i) {
      SpawnOptions so;
      so.argv = {"sh", "-c", "while :; do :; done"};
      m_loops.push_back(ChildProcess::spawn(so));
    }
  }
  ~BusyLoops() {
    for (auto& l : m_loops) {
      ::kill(l.pid(), SIGKILL);
      (void)l.wait(Deadline(Millis(5000)));
    }
  }
  BusyLoops(const BusyLoops&) = delete;
  BusyLoops& operator=(const BusyLoops&) = delete;

private:
  std::vector<ChildProcess> m_loops;
};

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

// The "live" workload (a journal, a checksummed file, a rewritten file, all in the share),
// served by VIRTIOFSD.
GuestOptions share_guest(const std::vector<std::string>& virtiofsd = {}) {
  std::string big(8u << 20, '\0');
  std::mt19937_64 rng(7);
  for (size_t i = 0; i < big.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(big.data() + i, &v, 8);
  }
  TempDir tmp;
  { std::ofstream(tmp / "big.bin", std::ios::binary) << big; }
  std::string md5 = run_command({"md5sum", tmp / "big.bin"}).output.substr(0, 32);
  return {.profile = Profile::kata,
          .workload = "live",
          .share_files = {{"big.bin", big}, {"big.md5", md5}},
          .virtiofsd_cmd = virtiofsd};
}

// The guest's workloads go on from console offset OFFSET: a whole checksum, a rewrite, five
// journal lines; no I/O error, no bad checksum, and the journal in the share is unbroken.
void require_share_workloads_continue(const GuestVm& vm, size_t offset) {
  vm.wait_console("ksnap: sum ok", Millis(120000), offset);
  vm.wait_console("ksnap: rewrite", Millis(60000), offset);
  long first = std::stol(vm.wait_console("ksnap: journal ", Millis(60000), offset).substr(15));
  vm.wait_console("ksnap: journal " + std::to_string(first + 5) + "\n", Millis(60000), offset);
  std::string after = vm.console().substr(offset);
  CHECK(after.find("BAD") == std::string::npos);
  CHECK(after.find("EIO") == std::string::npos);
  std::istringstream journal(read_file(vm.share_dir() + "/journal"));
  std::string line;
  long n = 0;
  while (std::getline(journal, line)) {
    INFO("journal line " << n + 1);
    REQUIRE(line == "j " + std::to_string(++n));
  }
  CHECK(n >= first + 5);
}

// Kills VM, empties its share, loads ARCHIVE in its place: the workloads go on.
void require_load_continues(GuestVm& vm, const std::string& archive, const std::string& run) {
  vm.kill();
  for (const auto& e : fs::directory_iterator(vm.share_dir())) {
    fs::remove_all(e.path());
  }
  size_t offset = vm.console().size();
  RestoredVm restored = load_ok(archive, run);
  require_share_workloads_continue(vm, offset);
}

} // namespace

TEST_CASE("virtiofsd answering after its device stopped: stop saves wait for it, live saves take the "
          "switchover again, and the guests carry on",
          "[.][starved]") {
  GuestVm vm(share_guest({"chrt", "-i", "0", test_env().virtiofsd}));
  vm.wait_console("ksnap: sum ok 1\n", Millis(120000));
  const std::string stop_archive = vm.dir() + "/stop.ksnap", live_archive = vm.dir() + "/live.ksnap";
  size_t waited = 0, retaken = 0;
  size_t offset = 0;
  {
    BusyLoops busy;
    for (int i = 0; i < 6; ++i) {
      for (const std::string mode : {"stop", "live"}) {
        const std::string& archive = mode == "stop" ? stop_archive : live_archive;
        fs::remove(archive);
        CommandResult r = run_cli({"save", "--qmp", vm.qmp_path(), "-o", archive, "--mode", mode, "-v"});
        INFO(mode << " save " << i << ": " << r.error_output);
        REQUIRE(r.status == 0);
        waited += occurrences(r.error_output, "its answers came in");
        retaken += occurrences(r.error_output, "taking the live snapshot again");
      }
    }
    offset = vm.console().size();
  }
  // How often the starved worker was caught holding a request (a stop in ten, here).
  WARN("requests held by virtiofsd at the stop: " << waited << " of 6 stop-mode saves waited for answers, "
                                                  << retaken << " live switchovers were taken again");
  require_share_workloads_continue(vm, offset); // the source guest, and its rings, are fine
  CHECK(run_cli({"verify", stop_archive}).status == 0);
  CHECK(run_cli({"verify", live_archive}).status == 0);
  require_load_continues(vm, stop_archive, vm.dir() + "/run-stop");
  require_load_continues(vm, live_archive, vm.dir() + "/run-live");
}

TEST_CASE("an answer virtiofsd never gives fails a save in 10 s, and every switchover caught fails a live "
          "save after 3, both leaving the VM as it was") {
  GuestVm vm(share_guest());
  vm.wait_console("ksnap: sum ok 1\n", Millis(120000));
  auto settings = [&] { // a client only between saves: QEMU serves one per socket
    qmp::Client qmp = vm.qmp();
    return std::make_pair(MigrationSettings::of(qmp), qmp.execute("query-status")["status"]);
  };
  const MigrationSettings before = settings().first;
  const std::string archive = vm.dir() + "/x.ksnap";
  auto save = [&](const std::string& mode, const std::string& fault) {
    return run_command({"env", "KSNAP_FAULT=" + fault, test_env().cli, "save", "--qmp", vm.qmp_path(), "-o",
                        archive, "--mode", mode},
                       Millis(120000));
  };
  auto as_it_was = [&] {
    CHECK_FALSE(fs::exists(archive));
    auto [now, status] = settings();
    CHECK(status == "running");
    CHECK(now == before);
    size_t offset = vm.console().size();
    vm.wait_console("ksnap: journal ", Millis(60000), offset);
  };
  {
    CommandResult r = save("stop", "vhost hung");
    INFO(r.error_output);
    CHECK(r.status == 1);
    CHECK_THAT(r.error_output, Catch::Contains("virtiofsd did not answer 1 FUSE request(s)") &&
                                 Catch::Contains("within 10 s") && Catch::Contains("hint:"));
    as_it_was();
  }
  {
    CommandResult r = save("live", "vhost in flight");
    INFO(r.error_output);
    CHECK(r.status == 1);
    CHECK_THAT(r.error_output, Catch::Contains("virtiofsd held 1 FUSE request(s) in flight") &&
                                 Catch::Contains("at each of 3 switchovers") &&
                                 Catch::Contains("--mode stop"));
    CHECK(occurrences(r.error_output, "taking the live snapshot again") == 2);
    as_it_was();
  }
  {
    CommandResult r = save("live", "vhost in flight:once");
    INFO(r.error_output);
    CHECK(r.status == 0);
    CHECK_THAT(r.error_output, Catch::Contains("taking the live snapshot again (attempt 2 of 3)"));
    CHECK(run_cli({"verify", archive}).status == 0);
    CHECK(settings().first == before);
  }
  require_load_continues(vm, archive, vm.dir() + "/run");
}
