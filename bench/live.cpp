// make bench, live mode: `save --mode live` against `save --mode stop` of the same guest in
// the same run, alternating, medians. Reports the downtime (QEMU's own measure, and ours from
// the final stop to `cont`), the pause the guest saw (the longest gap between the lines it
// prints every 10 ms, timed on the host), the total save time and the bytes written; first
// for the 1 GiB bench guest without shares, then for a Kata-like guest whose 100 MB share
// has 1 MiB rewritten all through the save.
#include "bench/bench_util.hpp"
#include "tests/e2e/guest_vm.hpp"
#include "util/strings.hpp"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <sys/stat.h>
#include <thread>

using namespace ks;
using namespace ks::test;
using namespace ks::bench;
namespace fs = std::filesystem;

namespace {

struct Figures {
  std::vector<double> seconds, qemu_downtime, paused, share, guest_gap;
  std::vector<double> idle_gap; // the longest gap over a second with no save: the pulse's own jitter
  uint64_t bytes = 0;
};

// The longest time FILE did not grow while RUNNING, polled every millisecond. A silence
// still going on when RUNNING turns false counts up to the file's next growth (2 s at most):
// a stop-mode save resumes the VM as its very last step, just before it exits.
double longest_silence(const std::string& file, const std::atomic<bool>& running) {
  auto size = [&] {
    struct stat st {};
    return ::stat(file.c_str(), &st) == 0 ? st.st_size : 0;
  };
  off_t last = size();
  auto since = Clock::now();
  double longest = 0;
  std::optional<Clock::time_point> ended;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    off_t now = size();
    if (now != last) {
      longest = std::max(longest, std::chrono::duration<double>(Clock::now() - since).count());
      last = now;
      since = Clock::now();
      if (ended) {
        break;
      }
    }
    if (!running && !ended) {
      ended = Clock::now();
    }
    if (ended && Clock::now() - *ended > std::chrono::seconds(2)) {
      break;
    }
  }
  return longest;
}

// One save of VM in MODE into OUT, timed, with the guest's longest silence meanwhile.
void save_once(const GuestVm& vm, const std::string& mode, const std::string& out, Figures& f) {
  std::string json = out + ".json";
  std::error_code ec;
  fs::remove(out, ec);
  fs::remove(json, ec);
  std::atomic<bool> running{true};
  double gap = 0;
  std::thread watch([&] { gap = longest_silence(vm.console_path(), running); });
  Run r{};
  try {
    r = timed_cli({"save", "--qmp", vm.qmp_path(), "-o", out, "--mode", mode, "--quiesce", "off", "--json"},
                  out + ".log", json);
  } catch (...) {
    running = false;
    watch.join();
    throw;
  }
  running = false;
  watch.join();
  qmp::Json j = qmp::Json::parse(read_file(json));
  f.seconds.push_back(r.seconds);
  f.paused.push_back(j.value("vm_paused_seconds", 0.0));
  f.guest_gap.push_back(gap);
  f.bytes = fs::file_size(out);
  const qmp::Json& live = j["live"];
  if (live.is_object()) {
    f.qemu_downtime.push_back(live.value("qemu_downtime_seconds", 0.0));
    f.share.push_back(live["share_seconds"].is_number() ? live["share_seconds"].get<double>() : 0.0);
  }
}

std::vector<double> scaled(const std::vector<double>& v) {
  std::vector<double> out;
  out.reserve(v.size());
  for (double d : v) {
    out.push_back(d * 1000);
  }
  return out;
}

double ms(const std::vector<double>& v) {
  return v.empty() ? 0.0 : median(v) * 1000;
}

void report(const char* title, const Figures& stop, const Figures& live, double downtime_target_ms) {
  std::printf("\n%s\n", title);
  std::printf("%-44s %10s %10s %8s %s\n", "", "stop", "live", "ratio", "target");
  std::printf("%-44s %9.2fs %9.2fs %7.2fx %s\n", "total save time (median)", median(stop.seconds),
              median(live.seconds), median(live.seconds) / median(stop.seconds), "<= 2.00x");
  std::printf("%-44s %10s %10s %7.2fx\n", "archive bytes written", human_size(stop.bytes).c_str(),
              human_size(live.bytes).c_str(), double(live.bytes) / double(stop.bytes));
  std::printf("%-44s %8.0fms %8.1fms %8s <= %.0f ms\n", "downtime, QEMU's measure (stop to completion)",
              ms(stop.paused), ms(live.qemu_downtime), "", downtime_target_ms);
  std::printf("%-44s %8.0fms %8.1fms\n", "  of which the shares' delta", 0.0, ms(live.share));
  std::printf("%-44s %8.0fms %8.1fms\n", "VM paused, ours (final stop to cont)", ms(stop.paused),
              ms(live.paused));
  std::printf("%-44s %8.0fms %8.1fms\n", "pause the guest saw (longest 10 ms-pulse gap)", ms(stop.guest_gap),
              ms(live.guest_gap));
  std::printf("%-44s %8s %8.1fms\n", "  the same over 1 s with no save (jitter)", "", ms(live.idle_gap));
  std::printf("raw ms: live QEMU downtime %s | live paused %s | live guest gap %s | stop guest gap %s\n",
              list(scaled(live.qemu_downtime)).c_str(), list(scaled(live.paused)).c_str(),
              list(scaled(live.guest_gap)).c_str(), list(scaled(stop.guest_gap)).c_str());
}

void measure(const GuestVm& vm, int rounds, Figures& stop, Figures& live) {
  for (int i = 0; i < rounds; ++i) {
    std::atomic<bool> running{true};
    std::thread stopper([&] {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      running = false;
    });
    live.idle_gap.push_back(longest_silence(vm.console_path(), running));
    stopper.join();
    auto a = [&] { save_once(vm, "stop", vm.dir() + "/stop.ksnap", stop); };
    auto b = [&] { save_once(vm, "live", vm.dir() + "/live.ksnap", live); };
    if (i % 2 == 0) {
      a();
      b();
    } else {
      b();
      a();
    }
  }
}

} // namespace

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
  std::printf("kata-snapshot live-mode benchmark: %d rounds, stop and live alternating\n", rounds);
  {
    GuestVm vm({.workload = "bench",
                .memory_mb = 1024,
                .kernel_args = {"ksnap.random_mb=280", "ksnap.text_mb=280", "ksnap.pulse_ms=10"}});
    std::printf("guest: %s\n", vm.wait_console("ksnap: filled", Millis(600000)).c_str());
    vm.wait_console("ksnap: pulse");
    {
      qmp::Client qmp = vm.qmp(); // populate guest RAM on the host first (ENVIRONMENT.md)
      qmp.execute("stop");
      migrate_out(qmp, "exec:cat > /dev/null");
      qmp.execute("cont");
    }
    Figures stop, live;
    measure(vm, rounds, stop, live);
    report("1 GiB guest, 560 MB in use, no shares", stop, live, 20);
  }
  std::map<std::string, std::string> files;
  std::mt19937_64 rng(7);
  for (int k = 0; k < 100; ++k) {
    std::string data(1u << 20, '\0');
    for (size_t i = 0; i < data.size(); i += 8) {
      uint64_t v = rng();
      std::memcpy(data.data() + i, &v, 8);
    }
    char name[32];
    std::snprintf(name, sizeof name, "file-%03d.bin", k);
    files[name] = std::move(data);
  }
  files["hot.bin"] = std::string(1u << 20, 'h');
  GuestVm vm({.profile = Profile::kata, .workload = "bench-share", .memory_mb = 512, .share_files = files});
  vm.wait_console("ksnap: ready", Millis(120000));
  Figures stop, live;
  measure(vm, rounds, stop, live);
  report("Kata-like guest, 512 MiB, 101 MiB virtio-fs share with hot.bin (1 MiB) rewritten every 0.1 s", stop,
         live, 50);
  return 0;
}
