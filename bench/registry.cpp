// make bench, registry: a 1 GiB guest's snapshot (as a save into a registry makes it)
// pushed to and pulled from a loopback docker-registry by kata-snapshot and by skopeo,
// alternating, medians, each push into a repository of its own; then a load from the
// registry against a load of the same snapshot from a local .ksnap file. Targets (the
// registry issue): push and pull >= 1.5x skopeo's throughput; registry load <= 1.3x. A load
// from a registry that redirects blob reads to a static file server over its storage (as
// registries on object storage or behind a CDN do) is measured alongside: the same client,
// without the registry serving every blob itself.
#include "bench/bench_util.hpp"
#include "tests/e2e/guest_vm.hpp"
#include "tests/e2e/registry_server.hpp"
#include "util/strings.hpp"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <thread>

using namespace ks;
using namespace ks::test;
using namespace ks::bench;
namespace fs = std::filesystem;

namespace {

double timed(const std::vector<std::string>& argv) {
  auto start = Clock::now();
  CommandResult r = run_command(argv, Millis(600000));
  if (r.status != 0) {
    throw Error(argv[0] + " failed: " + r.error_output);
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double mb_per_s(uint64_t bytes, double seconds) {
  return static_cast<double>(bytes) / 1e6 / seconds;
}

} // namespace

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
  std::printf(
    "\nkata-snapshot registry benchmark: 1 GiB guest, %d rounds, kata-snapshot and skopeo alternating\n",
    rounds);
  GuestVm vm(
    {.workload = "bench", .memory_mb = 1024, .kernel_args = {"ksnap.random_mb=280", "ksnap.text_mb=280"}});
  std::printf("guest: %s\n", vm.wait_console("ksnap: filled", Millis(600000)).c_str());
  const std::string dir = vm.dir();
  const std::string layout = "oci:" + dir + "/layout:snap";
  TestRegistry registry(dir + "/registry");
  const std::string insecure = "--tls-verify=false";
  // The snapshot as a save into a registry makes it, then the same in a local repository
  // and a .ksnap file.
  timed_cli({"save", "--mode", "stop", "--quiesce", "off", "--qmp", vm.qmp_path(), "-o",
             registry.ref("saved/vm:snap"), insecure},
            dir + "/save.log");
  timed_cli({"copy", registry.ref("saved/vm:snap"), layout, "--src-tls-verify=false"}, dir + "/copy.log");
  timed_cli({"copy", layout, dir + "/snap.ksnap"}, dir + "/copy.log");
  vm.kill();
  const uint64_t bytes = fs::file_size(dir + "/snap.ksnap");
  TestRegistry redirecting(dir + "/redirecting", {.redirect = true});
  timed_cli({"copy", layout, redirecting.ref("saved/vm:snap"), "--dest-tls-verify=false"}, dir + "/copy.log");

  std::vector<double> push, skopeo_push, pull, skopeo_pull, file_load, registry_load;
  // The registry's own CPU seconds while it serves our pulls and loads: on this 2-core
  // machine it shares the cores with the client and QEMU (docs/registries.md).
  std::vector<double> pull_registry_cpu, load_registry_cpu;
  std::vector<double> redirected_load, redirected_cpu; // the latter: registry and storage server
  auto registry_cpu = [&] { return process_cpu_seconds(registry.pid()); };
  std::error_code ec;
  for (int i = 0; i < rounds; ++i) {
    std::string n = std::to_string(i);
    auto ours = [&] {
      push.push_back(timed({test_env().cli, "copy", layout, registry.ref("ours" + n + "/vm:snap"),
                            "--dest-tls-verify=false", "-q"}));
      fs::remove_all(dir + "/pull", ec);
      double cpu = registry_cpu();
      pull.push_back(timed({test_env().cli, "copy", registry.ref("ours" + n + "/vm:snap"),
                            "oci:" + dir + "/pull:snap", "--src-tls-verify=false", "-q"}));
      pull_registry_cpu.push_back(registry_cpu() - cpu);
    };
    auto theirs = [&] {
      skopeo_push.push_back(timed({"skopeo", "copy", "-q", "--dest-tls-verify=false", layout,
                                   registry.ref("skopeo" + n + "/vm:snap")}));
      fs::remove_all(dir + "/spull", ec);
      skopeo_pull.push_back(timed({"skopeo", "copy", "-q", "--src-tls-verify=false",
                                   registry.ref("skopeo" + n + "/vm:snap"), "oci:" + dir + "/spull:snap"}));
    };
    if (i % 2 == 0) {
      ours();
      theirs();
    } else {
      theirs();
      ours();
    }
  }
  // Each load's `stream` step (-v): for this mapped-ram snapshot, QEMU reading the staged
  // memory into its own, the same work whichever the source, whose cost on this machine
  // swings with how fresh its memory is (docs/registries.md); the rest is the fetching.
  std::vector<double> file_qemu, registry_qemu, redirected_qemu;
  std::vector<double> file_cpu, registry_client_cpu; // kata-snapshot's own CPU per load
  for (int i = 0; i < rounds; ++i) {
    auto f = [&] {
      Run run = load_run({dir + "/snap.ksnap"}, dir + "/run-f", dir + "/lf.log");
      file_load.push_back(run.seconds);
      file_cpu.push_back(run.cpu_seconds);
      file_qemu.push_back(step_seconds(dir + "/lf.log", "stream"));
    };
    auto r = [&] {
      double cpu = registry_cpu();
      Run run = load_run({registry.ref("ours0/vm:snap"), insecure}, dir + "/run-r", dir + "/lr.log");
      registry_load.push_back(run.seconds);
      registry_client_cpu.push_back(run.cpu_seconds);
      registry_qemu.push_back(step_seconds(dir + "/lr.log", "stream"));
      load_registry_cpu.push_back(registry_cpu() - cpu);
    };
    auto d = [&] {
      auto cpu = [&] {
        return process_cpu_seconds(redirecting.pid()) + process_cpu_seconds(redirecting.storage_pid());
      };
      double before = cpu();
      redirected_load.push_back(
        load_seconds({redirecting.ref("saved/vm:snap"), insecure}, dir + "/run-d", dir + "/ld.log"));
      redirected_qemu.push_back(step_seconds(dir + "/ld.log", "stream"));
      redirected_cpu.push_back(cpu() - before);
    };
    // each in every position of the order, round by round
    std::vector<std::function<void()>> order = {f, r, d};
    std::rotate(order.begin(), order.begin() + i % 3, order.end());
    for (auto& step : order) {
      step();
    }
  }
  double p = mb_per_s(bytes, median(push)), sp = mb_per_s(bytes, median(skopeo_push));
  double l = mb_per_s(bytes, median(pull)), sl = mb_per_s(bytes, median(skopeo_pull));
  double fl = median(file_load), rl = median(registry_load);
  std::printf("\nsnapshot: %s\n", human_size(bytes).c_str());
  std::printf("%-34s %12s %12s %8s %s\n", "", "skopeo", "kata-snapshot", "ratio", "target");
  std::printf("%-34s %9.0f MB/s %9.0f MB/s %7.2fx %s\n", "push (new repository)", sp, p, p / sp, ">= 1.50x");
  std::printf("%-34s %9.0f MB/s %9.0f MB/s %7.2fx %s\n", "pull (to an oci: layout)", sl, l, l / sl,
              ">= 1.50x");
  std::printf("%-34s %10.2f s %10.2f s %7.2fx %s\n", "load to running: file / docker://", fl, rl, rl / fl,
              "<= 1.30x");
  std::printf("%-34s %10.2f s per pull, %.2f s per load (on the same 2 cores as the client)\n",
              "docker-registry's own CPU", median(pull_registry_cpu), median(load_registry_cpu));
  double dl = median(redirected_load);
  std::printf("%-34s %10.2f s %10.2f s %7.2fx (registry + storage server CPU %.2f s per load)\n",
              "  blobs redirected to storage", fl, dl, dl / fl, median(redirected_cpu));
  // The load without QEMU's read of the staged memory, round by round.
  auto rest = [](const std::vector<double>& load, const std::vector<double>& qemu) {
    std::vector<double> r;
    for (size_t k = 0; k < load.size(); ++k) {
      r.push_back(load[k] - qemu[k]);
    }
    return r;
  };
  double fr = median(rest(file_load, file_qemu)), rr = median(rest(registry_load, registry_qemu)),
         dr = median(rest(redirected_load, redirected_qemu));
  std::printf("%-34s %10.2f s %10.2f s %7.2fx (redirected: %.2f s, %.2fx)\n",
              "  the same without QEMU's read", fr, rr, rr / fr, dr, dr / fr);
  std::printf("%-34s %10.2f s %10.2f s (redirected: %.2f s)\n", "  QEMU's read of the staged memory",
              median(file_qemu), median(registry_qemu), median(redirected_qemu));
  // Both loads keep the 2 cores busy, so their CPU decides the ratio: within 1.3x of the
  // file load's time, the registry load has at most 2 x 1.3 x that time of CPU for the
  // client and the registry together (docs/registries.md).
  double fc = median(file_cpu), rc = median(registry_client_cpu), gc = median(load_registry_cpu);
  std::printf("%-34s %10.2f s %10.2f s + registry %.2f s = %.2f s (the target leaves %.2f s of 2 cores)\n",
              "  CPU per load: kata-snapshot", fc, rc, gc, rc + gc, 2 * 1.3 * fr);
  std::printf("raw seconds: push %s | skopeo push %s | pull %s | skopeo pull %s\n", list(push).c_str(),
              list(skopeo_push).c_str(), list(pull).c_str(), list(skopeo_pull).c_str());
  std::printf("raw seconds: file load %s | registry load %s | redirected load %s\n", list(file_load).c_str(),
              list(registry_load).c_str(), list(redirected_load).c_str());
  std::printf("raw seconds, QEMU's read: file %s | registry %s | redirected %s\n", list(file_qemu).c_str(),
              list(registry_qemu).c_str(), list(redirected_qemu).c_str());
  return 0;
}
