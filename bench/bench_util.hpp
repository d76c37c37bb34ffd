// Pieces shared by the benchmarks: medians, timed kata-snapshot runs, QEMU migrations.
#pragma once

#include "qmp/qmp_client.hpp"

#include <chrono>
#include <string>
#include <vector>

namespace ks::bench {

using Clock = std::chrono::steady_clock;

// "1.23 4.56 ..." of V.
std::string list(const std::vector<double>& v);
double median(std::vector<double> v);

// Polls QEMU until the migration completed; throws naming WHAT when it failed.
void wait_migration(qmp::Client& qmp, const std::string& what);
// A stopped-VM migration to URI with the bandwidth limit lifted, waited for.
void migrate_out(qmp::Client& qmp, const std::string& uri);

struct Run {
  double seconds;
  long rss_kib;
  double cpu_seconds; // user + system, its children included
};

// The seconds of step NAME in a -v log ("kata-snapshot: NAME   0.123 s"), 0 if absent.
double step_seconds(const std::string& log, const std::string& name);

// CPU seconds (user + system) process PID and its reaped children used so far.
double process_cpu_seconds(int pid);

// kata-snapshot ARGS -v, stderr to LOG, stdout to OUT; throws unless it succeeded.
Run timed_cli(const std::vector<std::string>& args, const std::string& log,
              const std::string& out = "/dev/null");

// `kata-snapshot load ARGS --run-dir RUN` timed (stderr to LOG), then the restored QEMU
// killed and waited for. The run's CPU is kata-snapshot's own: the QEMU it leaves running
// is not its reaped child.
Run load_run(const std::vector<std::string>& args, const std::string& run, const std::string& log);
// The same, the load's seconds only.
double load_seconds(const std::vector<std::string>& args, const std::string& run, const std::string& log);

} // namespace ks::bench
