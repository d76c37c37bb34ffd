// make bench, repository: a full save into an empty oci: repository, then a second save of
// the same guest (idle, its counter ticking), against `save -o FILE` (the default layout), all
// in stop mode, alternating, medians; then a load from the repository against a load of the
// .ksnap file. Targets (the repository issue): second save <= 0.3x the file save's time and
// <= 5 % of the first save's bytes; first save <= 1.5x; repository load <= 1.0x.
#include "bench/bench_util.hpp"
#include "snapshot/shared_ram.hpp"
#include "tests/e2e/guest_vm.hpp"
#include "util/blake3.hpp"
#include "util/error.hpp"
#include "util/strings.hpp"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <thread>
#include <unistd.h>

using namespace ks;
using namespace ks::test;
using namespace ks::bench;
namespace fs = std::filesystem;

namespace {

// The blob bytes a repository save wrote, from its --json result (appended to PATH).
uint64_t blob_bytes(const std::string& path) {
  std::string all = read_file(path);
  fs::remove(path);
  return qmp::Json::parse(all).value("blob_bytes_written", uint64_t{0});
}

// The floor of a second save of a guest whose memory is all allocated: only reading its
// shared memory file and hashing each 1 MiB chunk (a chunk of zeros is only compared), on
// as many threads as a save uses, with nothing else of a save around it. Seconds.
double read_and_hash_seconds(GuestVm& vm) {
  constexpr size_t chunk = 1u << 20;
  qmp::Client qmp = vm.qmp();
  std::vector<SharedRamBlock> blocks = open_shared_ram(qmp, vm.qemu_pid(), O_RDONLY, chunk);
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  auto start = Clock::now();
  for (const auto& b : blocks) {
    std::atomic<uint64_t> next{0};
    std::atomic<bool> failed{false};
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        std::vector<std::byte> buf(chunk);
        for (uint64_t at; (at = next.fetch_add(chunk)) < b.bytes;) {
          if (::pread(b.fd.get(), buf.data(), chunk, static_cast<off_t>(at)) != static_cast<ssize_t>(chunk)) {
            failed = true;
            return;
          }
          if (buf[0] != std::byte{0} || std::memcmp(buf.data(), buf.data() + 1, chunk - 1) != 0) {
            blake3_hex(buf);
          }
        }
      });
    }
    for (auto& w : workers) {
      w.join();
    }
    if (failed) {
      throw Error("failed to read memory block " + b.id + " of the bench guest");
    }
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// One guest's figures: SHARED, its memory is a shared memory-backend-file, as in every Kata
// sandbox (a repository save in stop mode reads it in place: --vmstate shared-ram); else
// QEMU's private RAM (mapped-ram, QEMU copies all of it).
void measure(int rounds, bool shared) {
  std::printf("\n== %s ==\n", shared ? "Kata-shaped guest: RAM in a shared memory-backend-file (as Kata)"
                                     : "plain guest: RAM private to QEMU");
  GuestOptions go{
    .workload = "bench", .memory_mb = 1024, .kernel_args = {"ksnap.random_mb=280", "ksnap.text_mb=280"}};
  if (shared) {
    go.extra_qemu_args = {"-object", "memory-backend-file,id=dimm1,size=1024M,mem-path=/dev/shm,share=on",
                          "-numa", "node,memdev=dimm1"};
  }
  GuestVm vm(go);
  std::printf("guest: %s\n", vm.wait_console("ksnap: filled", Millis(600000)).c_str());
  std::string dir = vm.dir();
  {
    qmp::Client qmp = vm.qmp(); // populate guest RAM on the host once (ENVIRONMENT.md)
    qmp.execute("stop");
    migrate_out(qmp, "exec:cat > /dev/null");
    qmp.execute("cont");
  }
  std::vector<double> file_save, first_save, second_save, file_load, repo_load, floor;
  // The repository's layout in a .ksnap file: what the layout costs, apart from the
  // repository. The save is mapped-ram without multifd (a file save's only mapped-ram); the
  // load is of the second snapshot copied out of the repository, the very same layout.
  std::vector<double> mapped_save, mapped_load;
  uint64_t file_bytes = 0, first_bytes = 0, second_bytes = 0;
  std::error_code ec;
  std::string last_repo;
  for (int i = 0; i < rounds; ++i) {
    auto file = [&] {
      fs::remove(dir + "/file.ksnap", ec);
      Run r = timed_cli(
        {"save", "--mode", "stop", "--quiesce", "off", "--qmp", vm.qmp_path(), "-o", dir + "/file.ksnap"},
        dir + "/save-file.log");
      file_save.push_back(r.seconds);
      file_bytes = fs::file_size(dir + "/file.ksnap");
    };
    auto repo = [&] {
      if (!last_repo.empty()) {
        fs::remove_all(last_repo, ec);
      }
      last_repo = dir + "/repo" + std::to_string(i);
      for (const char* tag : {"first", "second"}) {
        Run r = timed_cli({"save", "--mode", "stop", "--quiesce", "off", "--qmp", vm.qmp_path(), "-o",
                           "oci:" + last_repo + ":" + tag, "--json"},
                          dir + "/save-repo.log", dir + "/save-repo.json");
        uint64_t bytes = blob_bytes(dir + "/save-repo.json");
        (std::string(tag) == "first" ? first_save : second_save).push_back(r.seconds);
        (std::string(tag) == "first" ? first_bytes : second_bytes) = bytes;
        std::this_thread::sleep_for(Millis(1500)); // a tick or so of the idle guest in between
      }
      if (shared) {
        floor.push_back(read_and_hash_seconds(vm));
      }
    };
    auto mapped = [&] {
      fs::remove(dir + "/mapped.ksnap", ec);
      Run r = timed_cli({"save", "--mode", "stop", "--quiesce", "off", "--qmp", vm.qmp_path(), "-o",
                         dir + "/mapped.ksnap", "--vmstate", shared ? "shared-ram" : "mapped-ram",
                         "--chunk-size", "1"},
                        dir + "/save-mapped.log");
      mapped_save.push_back(r.seconds);
    };
    if (i % 2 == 0) {
      file();
      repo();
      mapped();
    } else {
      mapped();
      repo();
      file();
    }
  }
  timed_cli({"copy", "oci:" + last_repo + ":second", dir + "/repo.ksnap"}, dir + "/copy.log");
  vm.kill();
  for (int i = 0; i < rounds; ++i) {
    auto f = [&] {
      file_load.push_back(load_seconds({dir + "/file.ksnap"}, dir + "/run-f", dir + "/lf.log"));
    };
    auto o = [&] {
      repo_load.push_back(load_seconds({"oci:" + last_repo + ":second"}, dir + "/run-o", dir + "/lo.log"));
    };
    auto m = [&] {
      mapped_load.push_back(load_seconds({dir + "/repo.ksnap"}, dir + "/run-m", dir + "/lm.log"));
    };
    if (i % 2 == 0) {
      f();
      o();
      m();
    } else {
      m();
      o();
      f();
    }
  }
  double fs_ = median(file_save), s1 = median(first_save), s2 = median(second_save);
  double fl = median(file_load), ol = median(repo_load);
  std::printf("\n%-34s %10s %10s %8s %s\n", "", "save -o FILE", "oci:", "ratio", "target");
  std::printf("%-34s %9.2fs %9.2fs %7.2fx %s\n", "first save into an empty repository", fs_, s1, s1 / fs_,
              "<= 1.50x");
  std::printf("%-34s %9.2fs %9.2fs %7.2fx %s\n", "second save (guest idle)", fs_, s2, s2 / fs_, "<= 0.30x");
  std::printf("%-34s %10s %10s %7.1f%% %s\n", "second save's bytes / first's",
              human_size(first_bytes).c_str(), human_size(second_bytes).c_str(),
              100.0 * static_cast<double>(second_bytes) / static_cast<double>(first_bytes), "<= 5 %");
  std::printf("%-34s %10s\n", ".ksnap file size", human_size(file_bytes).c_str());
  std::printf("%-34s %9.2fs %9.2fs %7.2fx %s\n", "load (median)", fl, ol, ol / fl, "<= 1.00x");
  if (shared) {
    double f = median(floor);
    std::printf("%-34s %10s %9.2fs %7.2fx (the rest of a second save: %.2fs)\n",
                "  of which: read + hash the memory", "", f, f / fs_, s2 - f);
  }
  double ms = median(mapped_save), ml = median(mapped_load);
  std::printf("\nreference points, the repository's layout as a .ksnap file (1 MiB chunks):\n");
  std::printf("%-46s %7.2fs %7.2fx the file save\n",
              shared ? "save -o FILE --vmstate shared-ram" : "save -o FILE --vmstate mapped-ram (no multifd)",
              ms, ms / fs_);
  std::printf("%-46s %7.2fs %7.2fx the file load, the repository's %.2fx\n",
              "load of the second snapshot copied to a file", ml, ml / fl, ol / ml);
  std::printf("raw seconds: mapped save %s | mapped load %s\n", list(mapped_save).c_str(),
              list(mapped_load).c_str());
  std::printf("raw seconds: file save %s | first %s | second %s | file load %s | repo load %s\n",
              list(file_save).c_str(), list(first_save).c_str(), list(second_save).c_str(),
              list(file_load).c_str(), list(repo_load).c_str());
  if (shared) {
    std::printf("raw seconds: read + hash %s\n", list(floor).c_str());
  }
}

} // namespace

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
  std::printf(
    "\nkata-snapshot repository benchmark: 1 GiB guest, %d rounds, file and repository alternating\n",
    rounds);
  measure(rounds, true);
  measure(rounds, false);
  return 0;
}
