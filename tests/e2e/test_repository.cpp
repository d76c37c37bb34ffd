// Snapshots in an OCI image layout (oci:DIR[:TAG]) on a real guest: incremental saves,
// loads from the repository, conversion to and from .ksnap, skopeo, and the faults.
#include "tests/e2e/snapshot_steps.hpp"

#include "util/child_process.hpp"
#include "util/deadline.hpp"
#include "util/sha256.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <thread>
#include <unistd.h>

using namespace ks;
using namespace ks::test;

namespace {

// The members of a .ksnap file: name -> SHA-256 of its bytes, as GNU tar extracts them.
std::map<std::string, std::string> members_of(const std::string& archive, const std::string& dir) {
  std::filesystem::create_directories(dir);
  REQUIRE(run_command({"tar", "-xf", archive, "-C", dir}).status == 0);
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) {
      out[std::filesystem::relative(e.path(), dir)] = sha256_hex(read_file(e.path()));
    }
  }
  return out;
}

void write_file(const std::string& path, const std::string& bytes) {
  Fd f = open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  write_all(f.get(), bytes, path);
}

ChildProcess spawn(std::vector<std::string> argv, const std::string& err) {
  SpawnOptions so;
  so.argv = std::move(argv);
  so.stderr_path = err;
  return ChildProcess::spawn(so);
}

long files_in(const std::string& dir) {
  return std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator());
}

std::string host_name() {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

} // namespace

TEST_CASE("three saves into a repository: the later ones store little, and each one loads") {
  // 192 MB of data in the guest's memory, as a workload would have: what the repository holds
  // once. The guest's kernel alone dirties pages all over its memory from save to save: 3 to
  // 6 MB of chunks each time, under CI's load; a few percent of a guest with data in it.
  GuestVm vm(
    {.workload = "bench", .memory_mb = 512, .kernel_args = {"ksnap.random_mb=96", "ksnap.text_mb=96"}});
  vm.wait_console("ksnap: tick 3");
  std::string repo = "oci:" + vm.dir() + "/repo";
  std::vector<Mark> marks;
  std::vector<nlohmann::json> saves;
  for (int i = 0; i < 3; ++i) {
    std::string tag = "s" + std::to_string(i);
    saves.push_back(
      save_paused(vm.qmp_path(), repo + ":" + tag, {"--chunk-size", "1", "--label", "n=" + tag}));
    marks.push_back(mark(vm));
    CHECK(saves.back()["tag"] == tag);
    CHECK(saves.back()["digest"].get<std::string>().starts_with("sha256:"));
    vm.qmp().execute("cont");
    vm.wait_console("ksnap: tick " + std::to_string(marks.back().tick + 2) + "\n", Millis(60000),
                    marks.back().offset);
  }
  nlohmann::json list = cli_json({"list", repo, "--json"})["snapshots"];
  REQUIRE(list.size() == 3);
  uint64_t first = list[0]["size"].get<uint64_t>();
  for (int i = 1; i < 3; ++i) {
    INFO("snapshot " << i << " holds " << list[i]["unique_size"] << " of its own bytes; the first is "
                     << first);
    CHECK(list[i]["labels"]["n"] == "s" + std::to_string(i));
    CHECK(list[i]["unique_size"].get<uint64_t>() < first / 12);
    CHECK(saves[i]["stored_bytes"].get<uint64_t>() > saves[i]["archive_bytes"].get<uint64_t>() / 2);
  }
  CHECK(run_cli({"verify", repo + ":s1"}).status == 0);
  CHECK(cli_json({"check", repo, "--read-data", "--json"})["ok"] == true);
  vm.kill();
  for (int i = 0; i < 3; ++i) { // each from its own instant
    INFO("loading s" << i);
    Mark from{marks[i].tick, vm.console().size()};
    RestoredVm restored = load_ok(repo + ":s" + std::to_string(i), vm.dir() + "/run" + std::to_string(i));
    require_continues(vm, from, 3);
    restored.kill();
  }
}

TEST_CASE(
  "copy .ksnap -> oci: -> .ksnap gives byte-identical members, and skopeo reads and copies the repository") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  std::string archive = vm.dir() + "/vm.ksnap";
  save_paused(vm.qmp_path(), archive, {});
  Mark m = mark(vm);
  std::string repo = "oci:" + vm.dir() + "/repo";
  nlohmann::json copied = cli_json({"copy", archive, repo + ":nightly", "--json"});
  CHECK(copied["tag"] == "nightly");
  std::string back = vm.dir() + "/back.ksnap";
  cli_json({"copy", repo + ":nightly", back, "--json"});
  CHECK(members_of(archive, vm.dir() + "/x1") == members_of(back, vm.dir() + "/x2"));

  // skopeo, as operators would use it: the manifest, and a copy into another layout.
  CommandResult raw = run_command({"skopeo", "inspect", "--raw", repo + ":nightly"});
  INFO(raw.error_output);
  REQUIRE(raw.status == 0);
  nlohmann::json manifest = nlohmann::json::parse(raw.output);
  CHECK(manifest["artifactType"] == "application/vnd.kata-snapshot.v1");
  CHECK(manifest["layers"].back()["annotations"]["org.opencontainers.image.title"] == "index.json");
  std::string other = "oci:" + vm.dir() + "/other";
  CommandResult sc = run_command({"skopeo", "copy", repo + ":nightly", other + ":moved"});
  INFO(sc.error_output);
  REQUIRE(sc.status == 0);
  vm.kill();
  RestoredVm restored = load_ok(other + ":moved", vm.dir() + "/run");
  require_continues(vm, m);
}

TEST_CASE("repository faults: damaged and missing blobs, a killed save, locks") {
  GuestVm vm({.workload = "idle"});
  std::string dir = vm.dir() + "/repo";
  std::string repo = "oci:" + dir;
  save_paused(vm.qmp_path(), repo + ":good", {"--chunk-size", "1"});
  vm.qmp().execute("cont");
  nlohmann::json manifest =
    nlohmann::json::parse(run_command({"skopeo", "inspect", "--raw", repo + ":good"}).output);
  auto blob = [&](const std::string& title) {
    for (const auto& l : manifest["layers"]) {
      if (l["annotations"]["org.opencontainers.image.title"] == title) {
        return dir + "/blobs/sha256/" + l["digest"].get<std::string>().substr(7);
      }
    }
    FAIL("no layer " << title);
    return std::string();
  };
  SECTION("a flipped byte is found by check --read-data and refused by load") {
    std::string path = blob("vmstate/000002.zst");
    std::string bytes = read_file(path);
    bytes[bytes.size() / 2] ^= 0x01;
    std::filesystem::permissions(path, std::filesystem::perms::owner_write,
                                 std::filesystem::perm_options::add);
    write_file(path, bytes);
    CHECK(run_cli({"check", repo}).status == 0); // sizes are right: only the data is wrong
    CommandResult c = run_cli({"check", repo, "--read-data"});
    CHECK(c.status == 3);
    CHECK_THAT(c.output, Catch::Contains("needed by good"));
    CommandResult l = run_cli({"load", repo + ":good", "--run-dir", vm.dir() + "/run-flip"});
    CHECK(l.status == 3);
    CHECK_THAT(l.error_output, Catch::Contains("does not match its SHA-256"));
    CHECK(processes_with(vm.dir() + "/run-flip").empty());
  }
  SECTION("a missing blob is refused") {
    std::filesystem::remove(blob("vmstate/000001.zst"));
    CHECK(run_cli({"check", repo}).status == 3);
    CommandResult l = run_cli({"load", repo + ":good", "--run-dir", vm.dir() + "/run-missing"});
    CHECK(l.status == 3);
    CHECK_THAT(l.error_output, Catch::Contains("is missing"));
  }
  SECTION("a save killed in the middle leaves the repository clean; gc removes its blobs") {
    long before = files_in(dir + "/blobs/sha256");
    ChildProcess save = spawn({test_env().cli, "save", "--qmp", vm.qmp_path(), "-o", repo + ":killed",
                               "--chunk-size", "1", "--compress-level", "19", "--threads", "1"},
                              vm.dir() + "/killed.err");
    wait_until([&] { return files_in(dir + "/blobs/sha256") > before + 2; });
    ::kill(save.pid(), SIGKILL);
    REQUIRE(save.wait(Deadline(Millis(10000))) == 128 + SIGKILL);
    wait_until([&] { return vm.qmp().execute("query-status")["status"] == "running"; }); // the watchdog
    CHECK(vm.qmp().execute("query-status")["status"] == "running");
    CHECK(run_cli({"check", repo, "--read-data"}).status == 0);
    nlohmann::json gc = cli_json({"gc", repo, "--json"});
    CHECK(gc["removed"].size() > 0);
    CHECK(files_in(dir + "/blobs/sha256") == before);
    CHECK(run_cli({"check", repo, "--read-data"}).status == 0);
  }
  SECTION("prune waits for a save's lock, then exits 4; a lock left by a dead process is taken over") {
    ChildProcess holder = spawn({"flock", "-s", dir + "/.kata-snapshot/lock", "sleep", "30"}, "");
    wait_until([&] {
      return run_command({"flock", "-n", "-x", dir + "/.kata-snapshot/lock", "true"}).status != 0;
    });
    CommandResult p = run_cli({"prune", repo, "--keep-last", "1", "--lock-wait", "1"});
    CHECK(p.status == 4);
    CHECK_THAT(p.error_output, Catch::Contains("the repository " + dir + " is locked"));
    holder.terminate();
    std::filesystem::create_directories(dir + "/.kata-snapshot/lock.holders");
    write_file(dir + "/.kata-snapshot/lock.holders/dead.json",
               nlohmann::json{{"host", host_name()},
                              {"pid", 999999},
                              {"start_ticks", "1"},
                              {"purpose", "save"},
                              {"mode", "shared"},
                              {"started", "2026-01-01T00:00:00Z"}}
                 .dump());
    CommandResult q = run_cli({"prune", repo, "--keep-last", "1"});
    CHECK(q.status == 0);
    CHECK_THAT(q.error_output,
               Catch::Contains("took over the repository lock left by") && Catch::Contains("pid 999999"));
  }
}

TEST_CASE("examples/cron backs a VM up into a repository, night after night, and prunes it") {
  GuestVm vm({.workload = "idle"});
  std::string dir = vm.dir() + "/backups";
  std::string path = std::filesystem::path(test_env().cli).parent_path().string() + ":" + std::getenv("PATH");
  for (int night = 0; night < 2; ++night) {
    CommandResult r =
      run_command({"env", "PATH=" + path, "KEEP_DAILY=1", "bash",
                   std::string(KSNAP_SOURCE_DIR) + "/examples/cron/ksnap-backup.sh", vm.qmp_path(), dir},
                  Millis(300000));
    INFO(r.error_output);
    REQUIRE(r.status == 0);
    std::this_thread::sleep_for(Millis(1100)); // the next tag is the next second
  }
  nlohmann::json list = cli_json({"list", "oci:" + dir, "--json"})["snapshots"];
  REQUIRE(list.size() == 1); // both on the same day: --keep-daily 1 keeps the newer
  CHECK(list[0]["labels"]["origin"] == "cron");
  CHECK(cli_json({"check", "oci:" + dir, "--read-data", "--json"})["ok"] == true);
  CHECK(vm.qmp().execute("query-status")["status"] == "running");
}
