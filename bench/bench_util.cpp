#include "bench/bench_util.hpp"

#include "tests/e2e/guest_vm.hpp"
#include "util/strings.hpp"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <unistd.h>

namespace ks::bench {

using namespace ks::test;

std::string list(const std::vector<double>& v) {
  std::string out;
  for (double d : v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s%.2f", out.empty() ? "" : " ", d);
    out += buf;
  }
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void wait_migration(qmp::Client& qmp, const std::string& what) {
  for (;;) {
    std::string status = qmp.execute("query-migrate").value("status", "");
    if (status == "completed") {
      return;
    }
    if (status == "failed" || status == "cancelled") {
      throw Error(what + ": migration " + status);
    }
    std::this_thread::sleep_for(Millis(5));
  }
}

void migrate_out(qmp::Client& qmp, const std::string& uri) {
  qmp.execute("migrate-set-parameters", {{"max-bandwidth", 1ull << 40}});
  qmp.execute("migrate", {{"uri", uri}});
  wait_migration(qmp, uri);
}

double step_seconds(const std::string& log, const std::string& name) {
  std::string text = read_file(log);
  size_t at = text.find("kata-snapshot: " + name + " ");
  return at == std::string::npos ? 0.0 : std::stod(text.substr(at + 15 + name.size()));
}

double process_cpu_seconds(int pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto fields = split(stat.substr(stat.rfind(')') + 2), ' '); // field 3 (state) comes first
  double ticks = 0;
  for (size_t k = 11; k <= 14; ++k) { // utime, stime, cutime, cstime: fields 14-17
    ticks += std::stod(fields.at(k));
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

Run timed_cli(const std::vector<std::string>& args, const std::string& log, const std::string& out) {
  SpawnOptions so;
  so.argv = {test_env().cli};
  so.argv.insert(so.argv.end(), args.begin(), args.end());
  so.argv.push_back("-v"); // step timings on stderr
  so.stdout_path = out;
  so.stderr_path = log;
  auto start = Clock::now();
  ChildProcess p = ChildProcess::spawn(so);
  auto status = p.wait(Deadline(Millis(600000)));
  if (!status || *status != 0) {
    throw Error("kata-snapshot " + args[0] + " failed");
  }
  return {seconds_since(start), p.max_rss_kib(), p.cpu_seconds()};
}

} // namespace ks::bench

namespace ks::bench {

Run load_run(const std::vector<std::string>& args, const std::string& run, const std::string& log) {
  std::error_code ec;
  std::filesystem::remove(log, ec);
  std::vector<std::string> argv = {"load"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--run-dir", run});
  Run r = timed_cli(argv, log);
  int pid = std::stoi(trim(read_file(run + "/qemu.pid")));
  ::kill(pid, SIGKILL);
  while (::kill(pid, 0) == 0 &&
         read_file("/proc/" + std::to_string(pid) + "/stat").find(") Z") == std::string::npos) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::filesystem::remove_all(run, ec);
  return r;
}

double load_seconds(const std::vector<std::string>& args, const std::string& run, const std::string& log) {
  return load_run(args, run, log).seconds;
}

} // namespace ks::bench
