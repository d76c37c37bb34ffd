// make bench: kata-snapshot save/load against plain QEMU migration, measured in the same run
// on the same guest, alternating candidate and baseline, reporting medians and ratios.
//   save baseline: stop, max-bandwidth lifted, migrate to "exec:zstd -1 -T<cores> > file"
//   load baseline: -incoming defer, migrate-incoming "exec:zstd -dc file", cont
// The candidate is the default layout (multifd where QEMU has it) in stop mode, as the
// baselines are (bench/live.cpp measures live mode); reference points: save
// to stdout (no fsync), the stream and mapped-ram layouts (save and load),
// and QEMU alone (no compression at all).
#include "bench/bench_util.hpp"
#include "qmp/qmp_client.hpp"
#include "tests/e2e/guest_vm.hpp"
#include "util/deadline.hpp"
#include "util/error.hpp"
#include "util/strings.hpp"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <thread>
#include <unistd.h>

using namespace ks;
using namespace ks::test;
using namespace ks::bench;
namespace fs = std::filesystem;

namespace {

// QEMU started with -incoming defer, then migrate-incoming URI and cont: the seconds to running,
// and the CPU seconds QEMU (and the decompressor it ran) used.
Run qemu_load(const std::vector<std::string>& source_argv, const std::string& uri, const std::string& dir) {
  std::vector<std::string> argv = source_argv;
  argv.insert(argv.end(), {"-incoming", "defer"});
  for (auto& a : argv) { // the source's QMP socket and pid file live elsewhere this time
    if (a.find("qmp.sock") != std::string::npos) {
      a = "unix:" + dir + "/base-qmp.sock,server=on,wait=off";
    }
  }
  auto start = Clock::now();
  SpawnOptions so;
  so.argv = argv;
  so.stdout_path = so.stderr_path = dir + "/base-load.log";
  ChildProcess qemu = ChildProcess::spawn(so);
  while (!fs::exists(dir + "/base-qmp.sock")) {
    std::this_thread::sleep_for(Millis(2));
  }
  qmp::Client qmp = qmp::Client::connect(dir + "/base-qmp.sock");
  qmp.execute("migrate-incoming", {{"uri", uri}});
  wait_migration(qmp, "baseline load");
  qmp.execute("cont");
  double t = seconds_since(start);
  double cpu = process_cpu_seconds(qemu.pid());
  qemu.terminate(Millis(0));
  return {t, 0, cpu};
}

} // namespace

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  std::printf(
    "kata-snapshot benchmark: 1 GiB guest, %d rounds, %u cores, candidate and baseline alternating\n", rounds,
    cores);
  GuestVm vm(
    {.workload = "bench", .memory_mb = 1024, .kernel_args = {"ksnap.random_mb=280", "ksnap.text_mb=280"}});
  std::printf("guest: %s\n", vm.wait_console("ksnap: filled", Millis(600000)).c_str());
  std::string dir = vm.dir();
  {
    // Populate guest RAM on the host once (first touches cost a zero-fill): ENVIRONMENT.md.
    qmp::Client qmp = vm.qmp();
    qmp.execute("stop");
    migrate_out(qmp, "exec:cat > /dev/null");
    qmp.execute("cont");
  }
  std::vector<double> base_save, cand_save, base_load, cand_load;
  // CPU seconds of each load: QEMU and what fed it (zstd -dc, or kata-snapshot).
  std::vector<double> base_load_cpu, cand_load_cpu;
  // A load's seconds until its VM runs (before the guest refresh, which the baseline lacks).
  std::vector<double> cand_running;
  // Reference points in the same run: QEMU's own speed with nothing to compress or decompress
  // (save to /dev/null, load of the raw stream that QEMU reads itself), and save to stdout, which

  // like the baseline ends without an fsync.
  std::vector<double> floor_save, floor_load, cand_stdout, mapped_save, mapped_load, cand_paused,
    mapped_paused, stream_save, stream_load;
  // The candidate again, encrypted to an X25519 recipient (save) and opened with its key (load).
  std::vector<double> sealed_save, sealed_load;
  const std::string priv = dir + "/bench.pem", pub = dir + "/bench.pub";
  if (std::system(("openssl genpkey -algorithm x25519 -out " + priv + " && openssl pkey -in " + priv +
                   " -pubout -out " + pub)
                    .c_str()) != 0) {
    throw Error("openssl cannot make an X25519 key pair");
  }

  // How long a save stopped the VM, from its --json result.
  auto paused = [](const std::string& json_path) {
    double s = qmp::Json::parse(read_file(json_path)).value("vm_paused_seconds", 0.0);
    fs::remove(json_path); // the CLI's stdout is appended to
    return s;
  };

  long cand_rss = 0;
  uint64_t base_size = 0, cand_size = 0;
  // The order rotates from round to round: on this machine whatever runs right after a large
  // free (a QEMU or a staging file going away) is slower, as the memory is faulted back in.
  auto rotated = [](const std::vector<std::function<void()>>& steps, int round) {
    for (size_t k = 0; k < steps.size(); ++k) {
      steps[(k + static_cast<size_t>(round)) % steps.size()]();
    }
  };
  std::error_code ec;
  for (int i = 0; i < rounds; ++i) {
    auto base = [&] {
      qmp::Client qmp = vm.qmp();
      auto start = Clock::now();
      qmp.execute("stop");
      migrate_out(qmp, "exec:zstd -q -1 -T" + std::to_string(cores) + " > " + dir + "/base.zst");
      base_save.push_back(seconds_since(start));
      qmp.execute("cont");
    };
    auto cand = [&] {
      fs::remove(dir + "/cand.ksnap", ec);
      fs::remove(dir + "/save.log", ec);
      Run r = timed_cli({"save", "--mode", "stop", "--qmp", vm.qmp_path(), "-o", dir + "/cand.ksnap",
                         "--quiesce", "off", "--json"},
                        dir + "/save.log", dir + "/save.json");
      cand_save.push_back(r.seconds);
      cand_paused.push_back(paused(dir + "/save.json"));
      cand_rss = std::max(cand_rss, r.rss_kib);
    };
    auto piped = [&] {
      fs::remove(dir + "/stdout.ksnap", ec);
      Run r = timed_cli({"save", "--mode", "stop", "--qmp", vm.qmp_path(), "-o", "-", "--quiesce", "off"},
                        dir + "/save-stdout.log", dir + "/stdout.ksnap");
      cand_stdout.push_back(r.seconds);
    };
    auto streamed = [&] {
      fs::remove(dir + "/stream.ksnap", ec);
      Run r = timed_cli({"save", "--mode", "stop", "--qmp", vm.qmp_path(), "-o", dir + "/stream.ksnap",
                         "--quiesce", "off", "--vmstate", "stream"},
                        dir + "/save-stream.log");
      stream_save.push_back(r.seconds);
    };
    auto mapped = [&] {
      fs::remove(dir + "/mapped.ksnap", ec);
      Run r = timed_cli({"save", "--mode", "stop", "--qmp", vm.qmp_path(), "-o", dir + "/mapped.ksnap",
                         "--quiesce", "off", "--vmstate", "mapped-ram", "--json"},
                        dir + "/save-mapped.log", dir + "/save-mapped.json");
      mapped_save.push_back(r.seconds);
      mapped_paused.push_back(paused(dir + "/save-mapped.json"));
    };
    auto sealed = [&] {
      fs::remove(dir + "/sealed.ksnap", ec);
      Run r = timed_cli({"save", "--mode", "stop", "--qmp", vm.qmp_path(), "-o", dir + "/sealed.ksnap",
                         "--quiesce", "off", "--encrypt-recipient", pub},
                        dir + "/save-sealed.log");
      sealed_save.push_back(r.seconds);
      cand_rss = std::max(cand_rss, r.rss_kib);
    };
    auto floor = [&] {
      qmp::Client qmp = vm.qmp();
      auto start = Clock::now();
      qmp.execute("stop");
      migrate_out(qmp, i == 0 ? "exec:cat > " + dir + "/raw.stream" : std::string("exec:cat > /dev/null"));
      floor_save.push_back(seconds_since(start));
      qmp.execute("cont");
    };
    rotated({base, cand, piped, streamed, mapped, floor, sealed}, i);
  }
  // Memory with many workers: buffers are bounded by a budget, not by the thread count.
  Run wide_save = timed_cli({"save", "--mode", "stop", "--qmp", vm.qmp_path(), "-o", dir + "/wide.ksnap",
                             "--quiesce", "off", "--threads", "16"},
                            dir + "/save-wide.log");
  Run wide_sealed_save =
    timed_cli({"save", "--mode", "stop", "--qmp", vm.qmp_path(), "-o", dir + "/wide-sealed.ksnap",
               "--quiesce", "off", "--threads", "16", "--encrypt-recipient", pub},
              dir + "/save-wide-sealed.log");
  base_size = fs::file_size(dir + "/base.zst");
  cand_size = fs::file_size(dir + "/cand.ksnap");
  uint64_t mapped_size = fs::file_size(dir + "/mapped.ksnap");
  uint64_t stream_size = fs::file_size(dir + "/stream.ksnap");
  std::vector<std::string> source_argv = vm.argv();
  vm.kill();
  // Loads one archive into RUN and waits until the restored QEMU is gone again.
  auto load = [&](const std::string& archive, const std::string& run, const std::string& log,
                  const std::vector<std::string>& args = {}) {
    fs::remove(log, ec);
    std::vector<std::string> cli = {"load", archive, "--run-dir", run};
    cli.insert(cli.end(), args.begin(), args.end());
    Run r = timed_cli(cli, log);
    int pid = std::stoi(trim(read_file(run + "/qemu.pid")));
    r.cpu_seconds += process_cpu_seconds(pid);
    ::kill(pid, SIGKILL);
    // Not our child (load detaches it): wait until it is gone, so that its teardown (freeing
    // 1 GiB) does not slow down the next measurement.
    while (::kill(pid, 0) == 0 &&
           read_file("/proc/" + std::to_string(pid) + "/stat").find(") Z") == std::string::npos) {
      std::this_thread::sleep_for(Millis(5));
    }
    return r;
  };
  for (int i = 0; i < rounds; ++i) {
    std::string run = dir + "/run" + std::to_string(i);
    rotated(
      {[&] {
         Run r = qemu_load(source_argv, "exec:zstd -dc " + dir + "/base.zst", dir);
         base_load.push_back(r.seconds);
         base_load_cpu.push_back(r.cpu_seconds);
       },
       [&] { floor_load.push_back(qemu_load(source_argv, "file:" + dir + "/raw.stream", dir).seconds); },
       [&] {
         Run r = load(dir + "/cand.ksnap", run, dir + "/load.log");
         cand_load.push_back(r.seconds);
         cand_running.push_back(r.seconds - step_seconds(dir + "/load.log", "guest refresh"));
         cand_load_cpu.push_back(r.cpu_seconds);
         cand_rss = std::max(cand_rss, r.rss_kib);
       },
       [&] {
         mapped_load.push_back(
           load(dir + "/mapped.ksnap", run + "-mapped", dir + "/load-mapped.log").seconds);
       },
       [&] {
         stream_load.push_back(
           load(dir + "/stream.ksnap", run + "-stream", dir + "/load-stream.log").seconds);
       },
       [&] {
         Run r =
           load(dir + "/sealed.ksnap", run + "-sealed", dir + "/load-sealed.log", {"--decrypt-key", priv});
         sealed_load.push_back(r.seconds);
         cand_rss = std::max(cand_rss, r.rss_kib);
       }},
      i);
  }

  Run wide_load = load(dir + "/wide.ksnap", dir + "/run-wide", dir + "/load-wide.log");
  Run wide_sealed_load = load(dir + "/wide-sealed.ksnap", dir + "/run-wide-sealed",
                              dir + "/load-wide-sealed.log", {"--decrypt-key", priv, "--threads", "16"});
  double bs = median(base_save), cs = median(cand_save), bl = median(base_load), cl = median(cand_load);
  std::printf("\n%-28s %12s %12s %8s %s\n", "", "baseline", "kata-snap", "ratio", "target");
  std::printf("%-28s %11.2fs %11.2fs %7.2fx %s\n", "save (median)", bs, cs, cs / bs, "<= 1.00x");
  std::printf("%-28s %12s %12s %7.2fx %s\n", "archive size", human_size(base_size).c_str(),
              human_size(cand_size).c_str(), static_cast<double>(cand_size) / static_cast<double>(base_size),
              "<= 1.00x");
  std::printf("%-28s %11.2fs %11.2fs %7.2fx %s\n", "load to running (median)", bl, cl, cl / bl, "<= 0.60x");
  std::printf("%-28s %12s %12s %8s %s\n", "tool peak RSS", "-", human_size(uint64_t(cand_rss) * 1024).c_str(),
              "", "<= 200 MB");
  std::printf("%-28s %12s %12s %8s %s\n", "  with --threads 16: save", "-",
              human_size(uint64_t(wide_save.rss_kib) * 1024).c_str(), "", "<= 200 MB");
  std::printf("%-28s %12s %12s %8s %s\n", "  with --threads 16: load", "-",
              human_size(uint64_t(wide_load.rss_kib) * 1024).c_str(), "", "<= 200 MB");
  double es = median(sealed_save), el = median(sealed_load);
  std::printf("%-28s %11.2fs %11.2fs %7.2fx %s\n", "encrypted save (median)", cs, es, es / cs,
              "<= 1.10x the unencrypted save");
  std::printf("%-28s %11.2fs %11.2fs %7.2fx %s\n", "encrypted load (median)", cl, el, el / cl,
              "<= 1.10x the unencrypted load");
  std::printf("%-28s %12s %12s %8s %s\n", "  encrypted, --threads 16: save", "-",
              human_size(uint64_t(wide_sealed_save.rss_kib) * 1024).c_str(), "", "<= 200 MB");
  std::printf("%-28s %12s %12s %8s %s\n", "  encrypted, --threads 16: load", "-",
              human_size(uint64_t(wide_sealed_load.rss_kib) * 1024).c_str(), "", "<= 200 MB");
  double ps = median(cand_stdout), fs_ = median(floor_save), fl = median(floor_load);
  std::printf("\nreference points (same run, medians, ratio to the baseline):\n");
  std::printf("%-46s %7.2fs %7.2fx\n", "save -o - > file (no fsync, like the baseline)", ps, ps / bs);
  double ss = median(stream_save), sl = median(stream_load);
  std::printf("%-46s %7.2fs %7.2fx\n", "save --vmstate stream (one pipe)", ss, ss / bs);
  std::printf("%-46s %7.2fs %7.2fx\n", "load of that stream archive", sl, sl / bl);
  std::printf("%-46s %8s %7.2fx\n", "size of that stream archive", human_size(stream_size).c_str(),
              static_cast<double>(stream_size) / static_cast<double>(base_size));
  double ms = median(mapped_save), ml = median(mapped_load);
  std::printf("%-46s %7.2fs %7.2fx\n", "save --vmstate mapped-ram", ms, ms / bs);
  std::printf("%-46s %7.2fs %7.2fx\n", "load of that mapped-ram archive", ml, ml / bl);
  std::printf("%-46s %8s %7.2fx\n", "size of that mapped-ram archive", human_size(mapped_size).c_str(),
              static_cast<double>(mapped_size) / static_cast<double>(base_size));

  std::printf("%-46s %7.2fs %7.2fx\n", "QEMU save floor: migrate to exec:cat>/dev/null", fs_, fs_ / bs);
  double cp = median(cand_paused), mp = median(mapped_paused);
  std::printf("VM paused during the save (the baseline's VM stays stopped for all of it):\n");
  std::printf("%-46s %7.2fs %7.2fx\n", "  save (stream)", cp, cp / bs);
  std::printf("%-46s %7.2fs %7.2fx\n", "  save --vmstate mapped-ram", mp, mp / bs);

  std::printf("%-46s %7.2fs %7.2fx\n", "QEMU load floor: raw stream read from file:", fl, fl / bl);
  double cr = median(cand_running);
  std::printf("%-46s %7.2fs %7.2fx\n", "load until cont (without the guest refresh)", cr, cr / bl);

  double bcpu = median(base_load_cpu), ccpu = median(cand_load_cpu);
  std::printf("CPU seconds of a load, QEMU included (no load on %u cores takes less than CPU / %u):\n", cores,
              cores);
  std::printf("%-46s %7.2fs %7.2fx\n", "  baseline (QEMU + zstd -dc)", bcpu, 1.0);
  std::printf("%-46s %7.2fs %7.2fx   -> at least %.2fs = %.2fx the baseline's load\n",
              "  kata-snapshot load (tool + QEMU)", ccpu, ccpu / bcpu, ccpu / cores, ccpu / cores / bl);

  std::printf("steps of the last save: %s\nsteps of the last load: %s\n",
              log_tail(dir + "/save.log", 8).c_str(), log_tail(dir + "/load.log", 8).c_str());
  std::printf("raw seconds: save base %s | candidate %s | stdout %s | floor %s\n", list(base_save).c_str(),
              list(cand_save).c_str(), list(cand_stdout).c_str(), list(floor_save).c_str());
  std::printf("raw seconds: load base %s | candidate %s | floor %s | stream %s | mapped-ram %s\n",
              list(base_load).c_str(), list(cand_load).c_str(), list(floor_load).c_str(),
              list(stream_load).c_str(), list(mapped_load).c_str());
  std::printf("raw seconds: encrypted save %s | encrypted load %s\n", list(sealed_save).c_str(),
              list(sealed_load).c_str());

  return 0;
}
