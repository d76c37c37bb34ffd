#include "tests/e2e/snapshot_steps.hpp"

#include "util/error.hpp"
#include "util/fd.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <sys/wait.h>
#include <thread>

namespace ks::test {

RestoredVm::RestoredVm(const nlohmann::json& r)
  : m_result(r), m_pid(r.value("qemu_pid", -1)), m_qmp(r.value("qmp", "")) {
  reap_later(m_pid);
  for (int p : r.value("virtiofsd_pids", std::vector<int>{})) {
    reap_later(p);
    m_daemons.push_back(p);
  }
}

RestoredVm::~RestoredVm() {
  kill();
}

void RestoredVm::kill() {
  if (m_pid > 0) {
    ::kill(m_pid, SIGKILL);
    for (int i = 0; i < 200 && ::kill(m_pid, 0) == 0; ++i) {
      ::waitpid(m_pid, nullptr, WNOHANG);
      std::this_thread::sleep_for(Millis(10));
    }
    m_pid = -1;
  }
  for (int p : m_daemons) {
    ::kill(p, SIGKILL);
  }
  m_daemons.clear();
}

nlohmann::json save_paused(const std::string& qmp, const std::string& out,
                           const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"save", "--qmp", qmp, "-o", out, "--after", "pause", "--json"};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = run_cli(argv);
  INFO("save stderr: " << r.error_output);
  REQUIRE(r.status == 0);
  return nlohmann::json::parse(r.output);
}

RestoredVm load_ok(const std::string& archive, const std::string& run_dir,
                   const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"load", archive, "--run-dir", run_dir, "--json"};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = run_cli(argv);
  INFO("load stderr: " << r.error_output);
  REQUIRE(r.status == 0);
  return RestoredVm(nlohmann::json::parse(r.output));
}

Mark mark(const GuestVm& vm) {
  return {vm.last_tick(), vm.console().size()};
}

void require_continues(const GuestVm& vm, const Mark& m, long more) {
  REQUIRE(m.tick > 0);
  std::string next = "ksnap: tick " + std::to_string(m.tick + 1) + "\n";
  vm.wait_console(next, Millis(60000), m.offset);
  std::string after = vm.console().substr(m.offset);
  // Nothing between the snapshot and the next tick: no reboot, no restart of the counter.
  CHECK(after.find("ksnap: boot") == std::string::npos);
  CHECK(after.rfind("ksnap: tick " + std::to_string(m.tick + 1), 0) == 0);
  vm.wait_console("ksnap: tick " + std::to_string(m.tick + more) + "\n", Millis(60000), m.offset);
}

std::vector<int> processes_with(const std::string& needle) {
  std::vector<int> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    try {
      std::string cmd = read_file(e.path().string() + "/cmdline");
      std::string stat = read_file(e.path().string() + "/stat");
      bool zombie = stat.find(") Z ") != std::string::npos;
      if (!zombie && cmd.find(needle) != std::string::npos) {
        out.push_back(std::stoi(name));
      }
    } catch (const std::exception&) {
    }
  }
  return out;
}

void wait_until(const std::function<bool()>& done) {
  Deadline d(Millis(60000));
  while (!done()) {
    REQUIRE_FALSE(d.expired());
    std::this_thread::sleep_for(Millis(20));
  }
}

MigrationSettings MigrationSettings::of(qmp::Client& qmp) {
  return {qmp.execute("query-migrate-capabilities"), qmp.execute("query-migrate-parameters")};
}

void check_thawed(const GuestVm& vm) {
  CommandResult status = run_cli({"guest", "status", "--qmp", vm.qmp_path()});
  INFO(status.error_output);
  CHECK(status.status == 0);
  CHECK_THAT(status.output, Catch::Contains("thawed"));
}

} // namespace ks::test
