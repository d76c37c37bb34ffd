// make bench, containers: container mode against a whole-VM snapshot of the same guest (768 MiB,
// virtio-fs, a small container and one with a 64 MiB heap), alternating, medians. Per round:
// checkpoint (--after quit) and restore (--into) of each container, then a whole-VM save to a
// file and a load of it into a new QEMU (killed afterwards). Reported: times and archive sizes,
// and each container figure as a ratio of the whole-VM one.
#include "bench/bench_util.hpp"
#include "tests/e2e/guest_vm.hpp"
#include "util/strings.hpp"

#include <cstdio>
#include <filesystem>
#include <map>
#include <thread>

using namespace ks;
using namespace ks::test;
using namespace ks::bench;
namespace fs = std::filesystem;

namespace {

struct Figures {
  std::vector<double> save;
  std::vector<double> load;
  uint64_t bytes = 0;
};

void report(const char* what, const Figures& f, const Figures& vm) {
  double s = median(f.save);
  double l = median(f.load);
  std::printf("%-22s checkpoint %6.3f s (%.3fx)  restore %6.3f s (%.3fx)  archive %9s (%.4fx)\n", what, s,
              s / median(vm.save), l, l / median(vm.load), human_size(f.bytes).c_str(),
              static_cast<double>(f.bytes) / static_cast<double>(vm.bytes));
  std::printf("%-22s   checkpoints: %s\n%-22s   restores:    %s\n", "", list(f.save).c_str(), "",
              list(f.load).c_str());
}

// Waits until the guest prints a tick of container ID after OFFSET (it runs again).
void wait_running(const GuestVm& vm, const std::string& id, size_t offset) {
  vm.wait_console("ksnap: ctr " + id + " tick", Millis(60000), offset);
}

} // namespace

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
  std::printf("\nkata-snapshot container-mode benchmark: 768 MiB guest with CRIU, %d rounds, alternating\n",
              rounds);
  GuestVm vm({.profile = Profile::kata,
              .workload = "containers",
              .memory_mb = 768,
              .containers = {{.id = "small"}, {.id = "heap64", .heap_mb = 64}},
              .criu = true});
  vm.wait_console("ksnap: ctr heap64 tick", Millis(120000));
  const std::string& dir = vm.dir();
  {
    qmp::Client qmp = vm.qmp(); // populate guest RAM on the host once (ENVIRONMENT.md)
    qmp.execute("stop");
    migrate_out(qmp, "exec:cat > /dev/null");
    qmp.execute("cont");
  }
  std::map<std::string, Figures> ctr;
  Figures whole;
  std::error_code ec;
  for (int i = 0; i < rounds; ++i) {
    for (const char* id : {"small", "heap64"}) {
      std::string archive = dir + "/" + id + ".ksnap";
      fs::remove(archive, ec);
      Run s = timed_cli({"save", "--qmp", vm.qmp_path(), "--container", id, "-o", archive, "--after", "quit"},
                        dir + "/ctr-save.log");
      ctr[id].save.push_back(s.seconds);
      ctr[id].bytes = fs::file_size(archive);
      size_t off = vm.console().size();
      Run l = timed_cli({"load", archive, "--into", "--qmp", vm.qmp_path()}, dir + "/ctr-load.log");
      ctr[id].load.push_back(l.seconds);
      wait_running(vm, id, off);
    }
    std::string archive = dir + "/vm.ksnap";
    fs::remove(archive, ec);
    Run s = timed_cli({"save", "--qmp", vm.qmp_path(), "-o", archive}, dir + "/vm-save.log");
    whole.save.push_back(s.seconds);
    whole.bytes = fs::file_size(archive);
    fs::remove_all(dir + "/run", ec);
    std::string share = dir + "/share-restored-" + std::to_string(i);
    whole.load.push_back(
      load_seconds({archive, "--share-dir", "kataShared=" + share}, dir + "/run", dir + "/vm-load.log"));
    fs::remove_all(share, ec);
  }
  std::printf("%-22s checkpoint %6.3f s           restore %6.3f s           archive %9s\n",
              "whole VM (baseline)", median(whole.save), median(whole.load), human_size(whole.bytes).c_str());
  std::printf("%-22s   saves: %s\n%-22s   loads: %s\n", "", list(whole.save).c_str(), "",
              list(whole.load).c_str());
  report("container, no heap", ctr["small"], whole);
  report("container, 64 MiB heap", ctr["heap64"], whole);
  return 0;
}
