// Faults around save and load: damaged archives, an unwritable output, a killed save, a
// locked VM. Each must end with a clear error, the documented exit code, and nothing lost.
#include "storage/archive_reader.hpp"
#include "storage/archive_writer.hpp"
#include "tests/e2e/snapshot_steps.hpp"
#include "util/fd.hpp"
#include "util/unix_socket.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sys/file.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace ks;
using namespace ks::test;
namespace fs = std::filesystem;

namespace {

// Copies SRC to DST, rewriting the manifest through EDIT (hashes and index stay consistent).
void rewrite_archive(const std::string& src, const std::string& dst, const std::function<void(Json&)>& edit) {
  Fd in = open_file(src, O_RDONLY);
  ArchiveReader r(in.get(), src);
  Json manifest = r.manifest();
  edit(manifest);
  Fd out = open_file(dst, O_WRONLY | O_CREAT | O_TRUNC);
  ArchiveWriter w(out.get(), dst, manifest);
  while (auto m = r.next()) {
    w.add_member(m->name, m->data, m->sha256);
  }
  w.finish();
}

// Where MEMBER's data starts in the tar BYTES, and its size (pax path records honoured).
std::pair<size_t, size_t> member_data(const std::string& bytes, const std::string& member) {
  std::string pax_path;
  for (size_t pos = 0; pos + 512 <= bytes.size();) {
    std::string_view header(bytes.data() + pos, 512);
    if (header.find_first_not_of('\0') == std::string_view::npos) {
      break; // end of archive
    }
    size_t size = std::stoul(std::string(header.substr(124, 12)), nullptr, 8);
    std::string_view data(bytes.data() + pos + 512, size);
    if (header[156] == 'x') { // pax records: "LEN path=NAME\n"
      size_t at = data.find(" path=");
      pax_path =
        at == std::string_view::npos ? "" : std::string(data.substr(at + 6, data.find('\n', at) - at - 6));
    } else {
      std::string name = pax_path.empty() ? std::string(header.substr(0, header.find('\0'))) : pax_path;
      pax_path.clear();
      if (name == member && size > 0) {
        return {pos + 512, size};
      }
    }
    pos += 512 + (size + 511) / 512 * 512;
  }
  FAIL("the archive has no member " << member);
  return {0, 0};
}

void expect_refused(const std::string& archive, const std::string& run_dir, const std::string& fragment) {
  CommandResult r = run_cli({"load", archive, "--run-dir", run_dir});
  INFO(r.error_output);
  CHECK(r.status == 3);
  CHECK_THAT(r.error_output, Catch::StartsWith("kata-snapshot: error: ") && Catch::Contains(fragment));
  CHECK(processes_with(run_dir).empty()); // no QEMU left behind
}

} // namespace

TEST_CASE("damaged archives are refused with exit 3 and no QEMU is left running") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  std::string good = vm.dir() + "/good.ksnap";
  save_paused(vm.qmp_path(), good, {"--chunk-size", "1", "--vmstate", "stream"});
  std::string mapped = vm.dir() + "/mapped.ksnap";
  vm.qmp().execute("cont");
  save_paused(vm.qmp_path(), mapped, {"--chunk-size", "1", "--vmstate", "mapped-ram"});
  std::string multi = vm.dir() + "/multifd.ksnap";
  vm.qmp().execute("cont");
  // Stop mode: its chunk order is the one the channel-count case below was written against.
  save_paused(vm.qmp_path(), multi,
              {"--chunk-size", "1", "--vmstate", "multifd", "--threads", "2", "--mode", "stop"});
  vm.kill();
  std::string data = read_file(good);
  auto write = [&](const std::string& name, const std::string& bytes) {
    Fd f = open_file(vm.dir() + "/" + name, O_WRONLY | O_CREAT | O_TRUNC);
    write_all(f.get(), bytes, name);
    return vm.dir() + "/" + name;
  };
  SECTION("truncated") {
    expect_refused(write("cut.ksnap", data.substr(0, data.size() * 2 / 3)), vm.dir() + "/run-cut",
                   "is damaged");
  }
  // One byte of MEMBER's data flipped, AT bytes in (or its last byte, if it is shorter).
  auto flipped = [](std::string bytes, const std::string& member, size_t at) {
    auto [offset, size] = member_data(bytes, member);
    bytes[offset + std::min(at, size - 1)] ^= 0x01;
    return bytes;
  };
  // Cut just before index.json's pax header: every chunk is intact, the index is gone.
  auto without_index = [](const std::string& bytes) {
    size_t index_header = bytes.rfind("PaxHeader/index.json");
    REQUIRE(index_header != std::string::npos);
    return bytes.substr(0, index_header / 512 * 512);
  };
  SECTION("one byte flipped inside a vmstate chunk") {
    expect_refused(write("flip.ksnap", flipped(data, "vmstate/000003.zst", 1000)), vm.dir() + "/run-flip",
                   "does not match its SHA-256");
  }
  SECTION("missing index") {
    expect_refused(write("noindex.ksnap", without_index(data)), vm.dir() + "/run-noindex",
                   "index.json is missing");
  }
  SECTION("manifest from a future format version") {
    std::string future = vm.dir() + "/future.ksnap";
    rewrite_archive(good, future, [](Json& m) { m["format_version"] = 99; });
    expect_refused(future, vm.dir() + "/run-future", "format version 99 is newer");
  }
  SECTION("zero-length") {
    expect_refused(write("empty.ksnap", ""), vm.dir() + "/run-empty", "is empty or not a tar archive");
  }
  // The other layouts: a flipped byte in a chunk and a missing index, in archives of NAME
  // (its bytes are BYTES); the byte flipped is AT bytes into MEMBER.
  auto refused_layout = [&](const std::string& name, const std::string& bytes, const std::string& member,
                            size_t at) {
    SECTION(name + ": one byte flipped inside a vmstate chunk") {
      expect_refused(write(name + "-flip.ksnap", flipped(bytes, member, at)),
                     vm.dir() + "/run-" + name + "-flip", "does not match its SHA-256");
    }
    SECTION(name + ": missing index") {
      expect_refused(write(name + "-noindex.ksnap", without_index(bytes)),
                     vm.dir() + "/run-" + name + "-noindex", "index.json is missing");
    }
  };
  // mapped-ram: the state is staged while QEMU starts; QEMU must not outlive the refusal.
  refused_layout("mapped-ram", read_file(mapped), "vmstate/000000.zst", 100);
  // multifd: several connections into QEMU at once; all of them end when one fails.
  std::string multi_data = read_file(multi);
  refused_layout("multifd", multi_data, "vmstate/multifd-1/000003.zst", 1000);
  SECTION("multifd: truncated") {
    expect_refused(write("fcut.ksnap", multi_data.substr(0, multi_data.size() * 2 / 3)),
                   vm.dir() + "/run-fcut", "is damaged");
  }

  SECTION("multifd: chunks of a channel the manifest does not name") {
    std::string fewer = vm.dir() + "/fewer.ksnap";
    rewrite_archive(multi, fewer, [](Json& m) { m["vmstate"]["channels"] = 1; });
    expect_refused(fewer, vm.dir() + "/run-fewer",
                   "belongs to a multifd channel beyond the 1 the manifest names");
  }
}

// The host check runs while QEMU starts: its verdict must still win, and the QEMU it let
// start must not outlive it.
TEST_CASE("a host whose QEMU cannot load the snapshot is refused with exit 3 and no QEMU left") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  std::string archive = vm.dir() + "/vm.ksnap";
  save_paused(vm.qmp_path(), archive, {});
  vm.kill();
  SECTION("a QEMU binary that is not there") {
    CommandResult r =
      run_cli({"load", archive, "--run-dir", vm.dir() + "/run-none", "--qemu", vm.dir() + "/no-such-qemu"});
    INFO(r.error_output);
    CHECK(r.status == 3);
    CHECK_THAT(r.error_output, Catch::StartsWith("kata-snapshot: error: this host cannot load the snapshot: "
                                                 "QEMU cannot be run") &&
                                 Catch::Contains("hint: pass --qemu PATH"));
    CHECK(processes_with(vm.dir() + "/run-none").empty());
  }
  SECTION("a QEMU older than the one that took the snapshot (it starts, and is stopped)") {
    std::string old = vm.dir() + "/old-qemu";
    {
      Fd f = open_file(old, O_WRONLY | O_CREAT | O_TRUNC, 0755);
      write_all(
        f.get(),
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'QEMU emulator version 1.0.0'; exit 0; }\nexec " +
          test_env().qemu + " \"$@\"\n",
        old);
    }
    CommandResult r = run_cli({"load", archive, "--run-dir", vm.dir() + "/run-old", "--qemu", old});
    INFO(r.error_output);
    CHECK(r.status == 3);
    CHECK_THAT(r.error_output, Catch::Contains("QEMU 1.0.0 is older than the QEMU"));
    CHECK(processes_with(vm.dir() + "/run-old").empty());
  }
}

TEST_CASE("an output directory that cannot be written fails before the VM is paused") {

  GuestVm vm({.extra_qemu_args = {}});
  vm.wait_console("ksnap: tick 2");
  CommandResult r = run_cli({"save", "--qmp", vm.qmp_path(), "-o", vm.dir() + "/no/such/dir/vm.ksnap"});
  CHECK(r.status == 1);
  CHECK_THAT(r.error_output, Catch::Contains("cannot create a file in " + vm.dir() + "/no/such/dir"));
  // Never paused: the guest's counter ran straight through the attempt.
  qmp::Client qmp = vm.qmp();
  CHECK(qmp.execute("query-status")["status"] == "running");
  CHECK(qmp.execute("query-migrate").value("status", "none") == "none");
}

namespace {

// Starts a deliberately slow save of VM with ARGS, sends it SIGTERM once the temp archive
// holds data, and checks that it failed cleanly: exit 1, no archive, no temp file, and the
// VM running and counting. Returns the QMP client for more checks.
qmp::Client interrupt_save(GuestVm& vm, const std::vector<std::string>& args) {
  std::string out = vm.dir() + "/vm.ksnap";
  // A slow compressor keeps the save busy long enough to interrupt it mid-stream.
  SpawnOptions so;
  so.argv = {test_env().cli,     "save", "--qmp",     vm.qmp_path(), "-o",           out,
             "--compress-level", "19",   "--threads", "1",           "--chunk-size", "1"};
  so.argv.insert(so.argv.end(), args.begin(), args.end());
  so.stderr_path = vm.dir() + "/save.err";
  ChildProcess save = ChildProcess::spawn(so);
  Deadline d(Millis(60000));
  auto temp_has_data = [&] {
    for (const auto& e : fs::directory_iterator(vm.dir())) {
      if (e.path().filename().string().rfind(".vm.ksnap.tmp-", 0) == 0 && e.file_size() > 0) {
        return true;
      }
    }
    return false;
  };
  while (!temp_has_data() && save.running() && !d.expired()) {
    std::this_thread::sleep_for(Millis(20));
  }
  REQUIRE(save.running());
  ::kill(save.pid(), SIGTERM);
  auto status = save.wait(Deadline(Millis(30000)));
  REQUIRE(status);
  CHECK(*status == 1);
  CHECK_THAT(read_file(vm.dir() + "/save.err"), Catch::Contains("interrupted by SIGTERM"));
  CHECK_FALSE(fs::exists(out));
  CHECK_FALSE(temp_has_data());
  for (const auto& e : fs::directory_iterator(vm.dir())) {
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
  }
  qmp::Client qmp = vm.qmp();
  CHECK(qmp.execute("query-status")["status"] == "running");
  long t = vm.last_tick();
  vm.wait_console("ksnap: tick " + std::to_string(t + 2) + "\n");
  return qmp;
}

} // namespace

TEST_CASE("SIGTERM in the middle of a save leaves the VM running and no archive behind") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  qmp::Client qmp = interrupt_save(vm, {});
  CHECK(qmp.execute("query-migrate")["status"] == "cancelled");
}

TEST_CASE("SIGTERM while a mapped-ram save compresses: the paused VM runs again, QEMU as it was") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  // --after pause keeps the VM stopped while the staged state is compressed.
  qmp::Client qmp = interrupt_save(vm, {"--vmstate", "mapped-ram", "--after", "pause"});
  CHECK(qmp.execute("query-fdsets").empty());
  for (const auto& cap : qmp.execute("query-migrate-capabilities")) {
    if (cap["capability"] == "mapped-ram") {
      CHECK(cap["state"] == false);
    }
  }
}

TEST_CASE("SIGTERM in the middle of a live save: the VM runs, thawed, QEMU's settings as they were") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  MigrationSettings before;
  { // QEMU serves one QMP client at a time
    qmp::Client qmp = vm.qmp();
    before = MigrationSettings::of(qmp);
  }
  {
    qmp::Client qmp = interrupt_save(vm, {"--mode", "live"});
    CHECK(qmp.execute("query-migrate")["status"] == "cancelled");
    CHECK(MigrationSettings::of(qmp) == before);
  }
  check_thawed(vm);
}

// SIGKILL: nothing runs in the killed save; its watchdog process puts the VM back.
TEST_CASE("SIGKILL of a save: its watchdog resumes the VM, cancels the migration and removes the temp file") {
  std::string mode = GENERATE(as<std::string>{}, "stop", "live");
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  nlohmann::json caps;
  nlohmann::json params;
  {
    qmp::Client qmp = vm.qmp();
    caps = qmp.execute("query-migrate-capabilities");
    params = qmp.execute("query-migrate-parameters");
  }
  std::string out = vm.dir() + "/vm.ksnap";
  const std::string watchdog = std::string("watchdog\0--fd\0003\0--qmp\0", 22) + vm.qmp_path(); // its argv
  SpawnOptions so;
  so.argv = {test_env().cli,     "save", "--qmp",     vm.qmp_path(), "-o",           out, "--mode", mode,
             "--compress-level", "19",   "--threads", "1",           "--chunk-size", "1"};
  so.stderr_path = vm.dir() + "/save.err";
  ChildProcess save = ChildProcess::spawn(so);
  auto temp_exists = [&] {
    for (const auto& e : fs::directory_iterator(vm.dir())) {
      if (e.path().filename().string().rfind(".vm.ksnap.tmp-", 0) == 0) {
        return e.file_size() > 0;
      }
    }
    return false;
  };
  Deadline d(Millis(60000));
  while (!temp_exists() && save.running() && !d.expired()) {
    std::this_thread::sleep_for(Millis(20));
  }
  REQUIRE(save.running());
  ::kill(save.pid(), SIGKILL);
  auto killed_at = std::chrono::steady_clock::now();
  REQUIRE(save.wait(Deadline(Millis(10000))) == 128 + SIGKILL);
  // The watchdog: about a second at most on this machine.
  Deadline recovered(Millis(20000));
  while ((!processes_with(watchdog).empty() || temp_exists()) && !recovered.expired()) {
    std::this_thread::sleep_for(Millis(50));
  }
  WARN(mode << " mode: the watchdog was done " << seconds_since(killed_at) << " s after the SIGKILL");
  INFO(read_file(vm.dir() + "/save.err"));
  CHECK(processes_with(watchdog).empty());
  CHECK_FALSE(temp_exists());
  CHECK_FALSE(fs::exists(out));
  CHECK_THAT(read_file(vm.dir() + "/save.err"), Catch::Contains("watchdog: the save of QEMU pid"));
  {
    qmp::Client qmp = vm.qmp();
    CHECK(qmp.execute("query-status")["status"] == "running");
    // Failed (QEMU saw the dead save's end of the stream first) or cancelled (by the watchdog).
    CHECK_THAT(qmp.execute("query-migrate")["status"].get<std::string>(),
               Catch::Equals("failed") || Catch::Equals("cancelled"));
    CHECK(qmp.execute("query-migrate-capabilities") == caps);
    CHECK(qmp.execute("query-migrate-parameters") == params);
  }
  long t = vm.last_tick();
  vm.wait_console("ksnap: tick " + std::to_string(t + 2) + "\n");
  // And a save that finishes leaves no watchdog behind, nor a VM it resumed.
  CommandResult ok = run_cli({"save", "--qmp", vm.qmp_path(), "-o", out, "--mode", mode, "--after", "pause"});
  INFO(ok.error_output);
  REQUIRE(ok.status == 0);
  std::this_thread::sleep_for(Millis(500));
  CHECK(processes_with(watchdog).empty());
  CHECK_FALSE(vm.qmp().execute("query-status")["running"].get<bool>());
}

TEST_CASE("a VM locked by another kata-snapshot is refused with exit 4") {
  GuestVm vm({.workload = "idle"});
  TempDir locks;
  ::setenv("KSNAP_LOCK_DIR", locks.path().c_str(), 1);
  Fd lock = open_file(locks / ("qemu-" + std::to_string(vm.qemu_pid()) + ".lock"), O_RDWR | O_CREAT);
  REQUIRE(::flock(lock.get(), LOCK_EX) == 0);
  CommandResult r = run_cli({"save", "--qmp", vm.qmp_path(), "-o", vm.dir() + "/vm.ksnap"});
  ::unsetenv("KSNAP_LOCK_DIR");
  CHECK(r.status == 4);
  CHECK_THAT(r.error_output, Catch::Contains("(QEMU pid " + std::to_string(vm.qemu_pid()) + ") is locked") &&
                               Catch::Contains("hint: wait for the other kata-snapshot to finish"));
  CHECK(vm.qmp().execute("query-status")["status"] == "running");
}

namespace {

// A tmpfs of PAGES pages mounted on DIR for the scope (root only: the test is skipped otherwise).
class SmallTmpfs {
public:
  SmallTmpfs(const std::string& dir, uint64_t pages) : m_dir(dir) {
    fs::create_directories(dir);
    CommandResult r =
      run_command({"mount", "-t", "tmpfs", "-o", "size=" + std::to_string(pages * 4096), "tmpfs", dir});
    if (r.status != 0) {
      skip("cannot mount a tmpfs to fill up (" + r.error_output + ")");
    }
  }
  ~SmallTmpfs() { run_command({"umount", "-l", m_dir}); }
  SmallTmpfs(const SmallTmpfs&) = delete;
  SmallTmpfs& operator=(const SmallTmpfs&) = delete;

private:
  std::string m_dir;
};

} // namespace

// ENOSPC at the start (the file system full before the save), in the middle (filled once
// the first vmstate bytes are written) and at the commit (filled once the stream is in):
// KSNAP_FAULT=STEP:sigstop holds the save there while the test fills the tmpfs. Each time: one
// error, no retry, nothing under the final name, no temp file, the older snapshot beside it
// intact, and the VM running and thawed.
TEST_CASE("ENOSPC at the start, in the middle and at the commit of a save fails once and loses nothing") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  const std::string ref = vm.dir() + "/ref.ksnap";
  REQUIRE(run_cli({"save", "--qmp", vm.qmp_path(), "-o", ref}).status == 0);
  const std::string ref_bytes = read_file(ref);
  const uint64_t pages = (ref_bytes.size() + 4095) / 4096;
  const std::string mnt = vm.dir() + "/full";
  auto fill = [&] { run_command({"dd", "if=/dev/zero", "of=" + mnt + "/filler", "bs=4096"}); };
  auto attempt = [&](const std::string& where, const std::string& step) {
    INFO("ENOSPC " << where);
    SmallTmpfs tmpfs(mnt, 2 * pages + 256);
    { std::ofstream(mnt + "/older.ksnap", std::ios::binary) << ref_bytes; }
    SpawnOptions so;
    so.argv = {"env",
               "KSNAP_FAULT=" + step + ":sigstop",
               test_env().cli,
               "save",
               "--qmp",
               vm.qmp_path(),
               "-o",
               mnt + "/new.ksnap",
               "-q"};
    if (step.empty()) {
      so.argv.erase(so.argv.begin(), so.argv.begin() + 2);
      fill();
    }
    so.stderr_path = vm.dir() + "/enospc.err";
    fs::remove(so.stderr_path);
    ChildProcess save = ChildProcess::spawn(so);
    if (!step.empty()) { // stopped at STEP: fill the file system, then let it go on
      wait_until([&] {
        return read_file("/proc/" + std::to_string(save.pid()) + "/stat").find(") T ") != std::string::npos;
      });
      fill();
      ::kill(save.pid(), SIGCONT);
    }
    auto status = save.wait(Deadline(Millis(120000)));
    std::string err = read_file(so.stderr_path);
    INFO(err);
    CHECK(status == 1);
    CHECK_THAT(err,
               Catch::StartsWith("kata-snapshot: error: ") && Catch::Contains("No space left on device"));
    CHECK(std::count(err.begin(), err.end(), '\n') <= 2); // the error and its hint
    fs::remove(mnt + "/filler");
    CHECK_FALSE(fs::exists(mnt + "/new.ksnap"));
    for (const auto& e : fs::directory_iterator(mnt)) {
      CHECK(e.path().filename() == "older.ksnap");
    }
    CHECK(read_file(mnt + "/older.ksnap") == ref_bytes);
    CHECK(run_cli({"verify", mnt + "/older.ksnap"}).status == 0);
    {
      qmp::Client qmp = vm.qmp();
      CHECK(qmp.execute("query-status")["status"] == "running");
    }
    check_thawed(vm);
  };
  attempt("at the start", "");
  attempt("in the middle", "mid-stream");
  attempt("at the commit", "stream");
  long t = vm.last_tick();
  vm.wait_console("ksnap: tick " + std::to_string(t + 2) + "\n");
}

// Memory snapshots hold the guest's secrets: whatever the umask, what kata-snapshot writes is
// its owner's alone.
TEST_CASE("with umask 000 an archive, a repository's files and a run directory are private") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  auto with_open_umask = [&](const std::string& args) {
    return run_command({"sh", "-c", "umask 000 && exec " + test_env().cli + " " + args}, Millis(120000));
  };
  const std::string archive = vm.dir() + "/open.ksnap";
  REQUIRE(with_open_umask("save -q --qmp " + vm.qmp_path() + " -o " + archive).status == 0);
  auto mode = [](const std::string& path) {
    struct stat st {};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
  };
  CHECK(mode(archive) == 0600);
  REQUIRE(with_open_umask("save -q --qmp " + vm.qmp_path() + " -o oci:" + vm.dir() + "/repo").status == 0);
  for (const auto& e : fs::recursive_directory_iterator(vm.dir() + "/repo")) {
    INFO(e.path());
    if (e.is_regular_file()) {
      CHECK((mode(e.path()) & 077) == 0); // blobs, index.json, oci-layout, locks
    } else {
      CHECK((mode(e.path()) & 022) == 0);
    }
  }
  vm.kill();
  const std::string run_dir = vm.dir() + "/run";
  CommandResult load = with_open_umask("load -q " + archive + " --run-dir " + run_dir + " --json");
  INFO(load.error_output);
  REQUIRE(load.status == 0);
  RestoredVm restored(nlohmann::json::parse(load.output));
  CHECK(mode(run_dir) == 0700);
  CHECK(socket_exposure(restored.qmp_path()).empty());
}

// Signatures: a signed snapshot loads with --require-signature, from a file and from a
// repository it was copied into; one altered after signing (its hashes and index recomputed,
// the old signature kept), an unsigned one, and one signed by another key are refused before
// QEMU starts.
TEST_CASE("a signed snapshot loads with --require-signature, and altered, unsigned or foreign ones do not") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  const std::string key = vm.dir() + "/key.pem";
  const std::string pub = vm.dir() + "/key.pub";
  const std::string other = vm.dir() + "/other.pem";
  for (const auto& k : {key, other}) {
    REQUIRE(run_command({"openssl", "genpkey", "-algorithm", "ed25519", "-out", k}).status == 0);
  }
  REQUIRE(run_command({"openssl", "pkey", "-in", key, "-pubout", "-out", pub}).status == 0);
  const std::string archive = vm.dir() + "/signed.ksnap";
  save_paused(vm.qmp_path(), archive, {"--sign-key", key});
  vm.qmp().execute("cont");
  const std::string unsigned_archive = vm.dir() + "/unsigned.ksnap";
  save_paused(vm.qmp_path(), unsigned_archive);
  vm.qmp().execute("cont");
  const std::string foreign = vm.dir() + "/foreign.ksnap";
  save_paused(vm.qmp_path(), foreign, {"--sign-key", other});
  vm.kill();

  CommandResult ok = run_cli({"verify", archive, "--key", pub});
  INFO(ok.error_output);
  CHECK(ok.status == 0);
  CHECK_THAT(ok.output, Catch::Contains("signed by key"));
  // Altered after signing: a label added, every hash and the index recomputed, the signature kept.
  const std::string altered = vm.dir() + "/altered.ksnap";
  {
    Fd in = open_file(archive, O_RDONLY);
    ArchiveReader r(in.get(), archive);
    Json manifest = r.manifest();
    manifest["labels"]["owner"] = "mallory";
    Fd out = open_file(altered, O_WRONLY | O_CREAT | O_TRUNC);
    ArchiveWriter w(out.get(), altered, manifest);
    while (auto m = r.next()) {
      w.add_member(m->name, m->data, m->sha256);
    }
    std::string signature = r.index_signature();
    REQUIRE_FALSE(signature.empty());
    w.finish(Json::object(), [&](const std::string&) { return signature; });
  }
  CHECK(run_cli({"verify", altered}).status == 0); // intact as an archive: only the signature tells
  auto refused = [&](const std::string& snapshot, const std::string& why) {
    std::string run_dir = vm.dir() + "/run-refused";
    CommandResult r = run_cli({"load", snapshot, "--run-dir", run_dir, "--require-signature", pub});
    INFO(r.error_output);
    CHECK(r.status == 3);
    CHECK_THAT(r.error_output, Catch::StartsWith("kata-snapshot: error: ") && Catch::Contains(why));
    CHECK_FALSE(fs::exists(run_dir)); // refused before anything was started or created
    CHECK(run_cli({"verify", snapshot, "--key", pub}).status == 3);
  };
  refused(altered, "its signature does not match its contents");
  refused(unsigned_archive, "is not signed");
  refused(foreign, "is signed by key");

  // Through a repository: the signature is kept as an annotation, and checked the same way.
  REQUIRE(run_cli({"copy", archive, "oci:" + vm.dir() + "/repo:signed"}).status == 0);
  CHECK(run_cli({"verify", "oci:" + vm.dir() + "/repo:signed", "--key", pub}).status == 0);
  RestoredVm restored =
    load_ok("oci:" + vm.dir() + "/repo:signed", vm.dir() + "/run", {"--require-signature", pub});
  long t = vm.last_tick();
  vm.wait_console("ksnap: tick " + std::to_string(t + 2) + "\n");
}
