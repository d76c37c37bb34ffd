#include "snapshot/watchdog.hpp"

#include "guest-helper/channel.hpp"
#include "qmp/qmp_client.hpp"
#include "snapshot/mapped_ram.hpp"
#include "snapshot/vhost_inflight.hpp"
#include "snapshot/vm_lock.hpp"
#include "util/child_process.hpp"
#include "util/deadline.hpp"
#include "util/error.hpp"

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <thread>
#include <unistd.h>

namespace ks {

namespace fs = std::filesystem;

namespace {

// The capabilities a save may set.
const std::vector<std::string> k_watched_capabilities = {"multifd", "mapped-ram", "pause-before-switchover",
                                                         "auto-converge", "x-ignore-shared"};

void say(const std::string& line) {
  std::fprintf(stderr, "kata-snapshot: watchdog: %s\n", line.c_str());
}

// Retries ATTEMPT (which throws Error) until it succeeds or 10 s passed.
template <typename T>
T retry(const std::function<T()>& attempt) {
  Deadline deadline(std::chrono::seconds(10));
  for (;;) {
    try {
      return attempt();
    } catch (const Error&) {
      if (deadline.expired()) {
        throw;
      }
      std::this_thread::sleep_for(Millis(50));
    }
  }
}

void put_back_migration(qmp::Client& qmp, const WatchdogPlan& plan) {
  std::string status = qmp.execute("query-migrate").value("status", "none");
  if (status != "none" && status != "completed" && status != "failed" && status != "cancelled") {
    qmp.execute("migrate_cancel");
    say("cancelled the migration (it was " + status + ")");
  }
  wait_migration_idle(qmp);
  for (const auto& set : qmp.execute("query-fdsets")) {
    for (const auto& fd : set.value("fds", nlohmann::json::array())) {
      if (fd.value("opaque", "") == k_fdset_opaque) {
        qmp.execute("remove-fd", {{"fdset-id", set["fdset-id"]}});
        break;
      }
    }
  }
  nlohmann::json caps = nlohmann::json::array();
  for (const auto& cap : plan.capabilities) {
    const std::string name = cap.value("capability", "");
    if (std::find(k_watched_capabilities.begin(), k_watched_capabilities.end(), name) !=
        k_watched_capabilities.end()) {
      caps.push_back(cap);
    }
  }
  if (!caps.empty()) {
    qmp.execute("migrate-set-capabilities", {{"capabilities", caps}});
  }
  if (!plan.parameters.empty()) {
    qmp.execute("migrate-set-parameters", plan.parameters);
  }
}

// SIGTERM, and SIGKILL after 2 s, to a process that is still the one the load started.
void stop_process(pid_t pid, const std::string& ticks) {
  auto same = [&] { return !ticks.empty() && process_start_ticks(pid) == ticks; };
  if (!same()) {
    return;
  }
  ::kill(pid, SIGTERM);
  Deadline deadline(Millis(2000));
  while (same() && !deadline.expired()) {
    std::this_thread::sleep_for(Millis(20));
  }
  if (same()) {
    ::kill(pid, SIGKILL);
  }
  say("stopped pid " + std::to_string(pid));
}

void remove_files(const WatchdogPlan& plan) {
  for (const auto& path : plan.remove) {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
}

// A load died: what it started goes.
void recover_load(const WatchdogPlan& plan) {
  say("the load into " + plan.run_dir + " died before it finished; stopping what it started");
  for (const auto& [pid, ticks] : plan.stop) {
    stop_process(pid, ticks);
  }
  remove_files(plan);
}

void recover(const WatchdogPlan& plan) {
  if (!plan.output.empty()) { // a container-mode save: the VM was never paused
    say("the container save into " + plan.output + " died before it finished; removing its temp files");
    remove_files(plan);
    return;
  }
  if (plan.qmp_socket.empty()) {
    recover_load(plan);
    return;
  }
  say("the save of QEMU pid " + std::to_string(plan.qemu_pid) +
      " died before it finished; putting the VM back");
  // The dead save's lock went with it; holding it keeps another save out while we work.
  VmLock lock = retry<VmLock>([&] { return VmLock(plan.qemu_pid); });
  qmp::Client qmp = retry<qmp::Client>([&] { return qmp::Client::connect(plan.qmp_socket, Millis(2000)); });
  put_back_migration(qmp, plan);
  if (plan.was_running && !qmp.execute("query-status").value("running", true)) {
    std::vector<Virtiofsd> daemons; // stopped now: their notifiers can be told apart
    for (pid_t pid : plan.virtiofsd) {
      record_stopped(daemons.emplace_back(Virtiofsd{.pid = pid}), plan.qemu_pid);
    }
    qmp.execute("cont");
    say("resumed the VM");
    notify_virtiofsd(qmp, plan.qemu_pid, daemons);
  } else if (plan.was_running) { // QEMU's own resume of a cancelled live save
    notify_virtiofsd(qmp, plan.qemu_pid, plan.virtiofsd);
  }
  if (!plan.helper_socket.empty()) {
    try {
      guest::Channel::connect_and_execute(plan.helper_socket, "guest-fsfreeze-thaw", nlohmann::json::object(),
                                          Millis(5000));
      say("the guest is thawed");
    } catch (const std::exception& e) {
      say(std::string("could not reach the guest helper to thaw (it thaws itself after 60 s): ") + e.what());
    }
  }
  remove_files(plan);
}

} // namespace

const std::vector<std::string>& watched_parameters() {
  static const std::vector<std::string> names = {"max-bandwidth", "downtime-limit", "multifd-channels",
                                                 "multifd-compression"};
  return names;
}

nlohmann::json WatchdogPlan::to_json() const {
  return {{"qmp_socket", qmp_socket},
          {"qemu_pid", qemu_pid},
          {"was_running", was_running},
          {"capabilities", capabilities},
          {"parameters", parameters},
          {"helper_socket", helper_socket},
          {"remove", remove},
          {"stop", stop},
          {"run_dir", run_dir},
          {"virtiofsd", virtiofsd},
          {"output", output}};
}

WatchdogPlan WatchdogPlan::from_json(const nlohmann::json& j) {
  WatchdogPlan p;
  p.qmp_socket = j.at("qmp_socket");
  p.qemu_pid = j.at("qemu_pid");
  p.was_running = j.at("was_running");
  p.capabilities = j.at("capabilities");
  p.parameters = j.at("parameters");
  p.helper_socket = j.at("helper_socket");
  p.remove = j.at("remove").get<std::vector<std::string>>();
  p.stop = j.value("stop", decltype(p.stop){});
  p.run_dir = j.value("run_dir", "");
  p.virtiofsd = j.value("virtiofsd", decltype(p.virtiofsd){});
  p.output = j.value("output", "");
  return p;
}

Watchdog::Watchdog(const WatchdogPlan& plan) {
  Pipe pipe = make_pipe();
  SpawnOptions so;
  // This binary, even if replaced since; --qmp (--load, --output) names what it guards in `ps`.
  so.argv = {"/proc/self/exe", "watchdog", "--fd", "3"};
  if (!plan.output.empty()) {
    so.argv.insert(so.argv.end(), {"--output", plan.output});
  } else if (plan.qmp_socket.empty()) {
    so.argv.insert(so.argv.end(), {"--load", plan.run_dir});
  } else {
    so.argv.insert(so.argv.end(), {"--qmp", plan.qmp_socket});
  }
  so.inherit = {{pipe.read.get(), 3}, {STDERR_FILENO, STDERR_FILENO}};
  so.detach = Detach::yes; // it must outlive us
  ChildProcess::spawn(so).release();
  m_pipe = std::move(pipe.write);
  write_all(m_pipe.get(), plan.to_json().dump() + "\n", "the watchdog's pipe");
}

void Watchdog::also_remove(const std::string& path) noexcept {
  try {
    if (m_pipe) {
      write_all(m_pipe.get(), nlohmann::json{{"remove", path}}.dump() + "\n", "the watchdog's pipe");
    }
  } catch (const std::exception&) {
  }
}

void Watchdog::also_stop(pid_t pid) noexcept {
  try {
    if (m_pipe) {
      write_all(m_pipe.get(), nlohmann::json{{"stop", {pid, process_start_ticks(pid)}}}.dump() + "\n",
                "the watchdog's pipe");
    }
  } catch (const std::exception&) {
  }
}

void Watchdog::disarm() noexcept {
  try {
    if (m_pipe) {
      write_all(m_pipe.get(), std::string("disarm\n"), "the watchdog's pipe");
    }
  } catch (const std::exception&) {
  }
  m_pipe.reset();
}

int run_watchdog(int fd) {
  std::string buffered;
  std::optional<WatchdogPlan> plan;
  std::vector<char> buf(4096);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break; // the save is gone
    }
    buffered.append(buf.data(), static_cast<size_t>(n));
    for (size_t eol; (eol = buffered.find('\n')) != std::string::npos; buffered.erase(0, eol + 1)) {
      std::string line = buffered.substr(0, eol);
      if (line == "disarm") {
        return 0;
      }
      nlohmann::json j = nlohmann::json::parse(line);
      if (!plan) {
        plan = WatchdogPlan::from_json(j);
      } else if (j.contains("remove")) {
        plan->remove.push_back(j["remove"]);
      } else if (j.contains("stop")) {
        plan->stop.emplace_back(j["stop"].at(0).get<pid_t>(), j["stop"].at(1).get<std::string>());
      }
    }
  }
  if (!plan) {
    return 0;
  }
  try {
    recover(*plan);
  } catch (const std::exception& e) {
    say(std::string("failed to put the VM back: ") + e.what());
    return 1;
  }
  return 0;
}

} // namespace ks
