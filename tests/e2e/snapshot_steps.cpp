#include "tests/e2e/snapshot_steps.hpp"

#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/strings.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
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

nlohmann::json cli_json(const std::vector<std::string>& argv) {
  CommandResult r = run_cli(argv);
  INFO(r.error_output);
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

std::string numbers(int n) {
  std::string s;
  for (int i = 1; i <= n; ++i) {
    s += std::to_string(i) + "\n";
  }
  return s;
}

long last_number(const std::string& text, const std::string& prefix) {
  std::regex re(prefix + R"( (\d+))");
  long n = -1;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) {
    n = std::stol((*it)[1]);
  }
  return n;
}

GuestOptions live_share_guest(size_t mib, uint64_t seed, const std::vector<std::string>& virtiofsd) {
  std::string big(mib << 20, '\0');
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < big.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(big.data() + i, &v, 8);
  }
  TempDir tmp;
  { std::ofstream(tmp / "big.bin", std::ios::binary) << big; }
  std::string md5 = run_command({"md5sum", tmp / "big.bin"}).output.substr(0, 32);
  return {.profile = Profile::kata,
          .workload = "live",
          .share_files = {{"big.bin", big}, {"big.md5", md5}},
          .virtiofsd_cmd = virtiofsd};
}

GuestOptions vfs_guest() {
  return {.profile = Profile::kata, .workload = "vfs", .share_files = {{"numbers.txt", numbers(5000)}}};
}

VfsMark save_vfs(GuestVm& vm, const std::string& archive, const std::vector<std::string>& args) {
  vm.wait_console("ksnap: appended 5\n");
  vm.wait_console("ksnap: cwd 2\n");
  std::vector<std::string> argv = {"save",  "--qmp",   vm.qmp_path(), "-o",
                                   archive, "--after", "pause",       "--json"};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = run_cli(argv);
  INFO(r.error_output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.error_output, Catch::Contains("deleted.tmp was deleted while open in the guest"));

  std::string text = vm.console();
  return {{0, text.size()}, last_number(text, "ksnap: appended"), last_number(text, "ksnap: read")};
}

// The restored guest carries on: appends land at the right offsets, reads continue, no EIO.
void require_vfs_continues(const GuestVm& vm, const VfsMark& m, const std::string& share_dir) {
  vm.wait_console("ksnap: appended " + std::to_string(m.appended + 5) + "\n", Millis(60000), m.base.offset);
  vm.wait_console("ksnap: read " + std::to_string(m.read + 3) + "\n", Millis(60000), m.base.offset);
  vm.wait_console("ksnap: cwd", Millis(60000), m.base.offset);
  // virtiofsd cannot migrate a file deleted while open (it has no path left): the save warns,
  // and after the restore only that file's fd fails. Everything else has no I/O error.
  vm.wait_console("ksnap: EIO deleted", Millis(60000), m.base.offset);
  std::string after = vm.console().substr(m.base.offset);
  for (const char* workload : {"EIO append", "EIO cwd"}) {
    CHECK(after.find(workload) == std::string::npos);
  }
  CHECK(after.find("ksnap: read EOF") == std::string::npos);
  CHECK(after.find("ksnap: boot") == std::string::npos);
  // The first read after the restore is the line after the last one read before it.
  std::smatch first;
  REQUIRE(std::regex_search(after, first, std::regex(R"(ksnap: read (\d+))")));
  CHECK(std::stol(first[1]) == m.read + 1);
  // The host file: "line 1" .. "line N" with no hole and no repeated line.
  auto lines = split(trim(read_file(share_dir + "/append.log")), '\n');
  REQUIRE(lines.size() >= static_cast<size_t>(m.appended + 5));
  for (size_t i = 0; i < lines.size(); ++i) {
    INFO("append.log line " << i + 1);
    REQUIRE(lines[i] == "line " + std::to_string(i + 1));
  }
}

} // namespace ks::test
