#include "snapshot/kata.hpp"

#include "guest-helper/channel.hpp"
#include "qmp/qmp_client.hpp"
#include "snapshot/qemu_argv.hpp"
#include "snapshot/vm.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/strings.hpp"

#include <cstdio>
#include <filesystem>

namespace ks {

namespace fs = std::filesystem;

namespace {

constexpr const char* k_monitor_hint =
  "the Kata shim holds qmp.sock; set extra_monitor_socket = \"qmp\" under [hypervisor.qemu] in Kata's "
  "configuration.toml so that the runtime adds extra-monitor.sock, then restart the sandbox";

std::string under(const std::string& root, const std::string& path) {
  return root.empty() || root == "/" ? path : (fs::path(root) / fs::path(path).relative_path()).string();
}

// "ok", "held" (a client is connected: no greeting), or "none" (no socket, or nothing listens).
std::string probe_qmp(const std::string& path) {
  if (path.empty() || !fs::exists(path)) {
    return "none";
  }
  try {
    qmp::Client::connect(path, Millis(1500));
    return "ok";
  } catch (const qmp::MonitorBusy&) {
    return "held";
  } catch (const Error&) {
    return "none";
  }
}

std::vector<pid_t> qemu_pids() {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    std::error_code ec;
    std::string exe = fs::read_symlink(e.path() / "exe", ec).filename().string();
    if (!ec && exe.rfind("qemu-system-", 0) == 0) {
      out.push_back(std::stoi(name));
    }
  }
  return out;
}

} // namespace

pid_t find_sandbox_qemu(const std::string& id) {
  for (pid_t pid : qemu_pids()) {
    try {
      QemuArgv argv(read_proc_cmdline(pid));
      auto name = argv.first("name");
      if (name && OptionValue::parse(*name).items().front().second == "sandbox-" + id) {
        return pid;
      }
    } catch (const Error&) {
      // The process went away while we looked.
    }
  }
  return -1;
}

Sandbox find_sandbox(const std::string& id, const std::string& kata_root) {
  if (id.empty() || id.find('/') != std::string::npos || id == "." || id == "..") {
    throw Error("invalid sandbox id \"" + id + "\"", ExitCode::usage);
  }
  Sandbox s;
  s.id = id;
  std::string go_dir = under(kata_root, "/run/vc/vm/" + id);
  std::string rs_dir = under(kata_root, "/run/kata/" + id);
  if (fs::is_directory(go_dir)) {
    s.runtime = "go";
    s.vm_dir = go_dir;
    s.shared_dir = under(kata_root, "/run/kata-containers/shared/sandboxes/" + id + "/shared");
  } else if (fs::is_directory(rs_dir)) {
    s.runtime = "rs";
    s.vm_dir = rs_dir;
    s.shared_dir = under(kata_root, "/run/kata-containers/shared/sandboxes/" + id + "/ro");
  } else {
    throw Error("no Kata sandbox " + id + ": neither " + go_dir + " nor " + rs_dir + " exists",
                ExitCode::failed, "list the sandboxes with `kata-snapshot ps`");
  }
  s.qemu_pid = find_sandbox_qemu(id);
  std::string main_sock = s.vm_dir + "/qmp.sock";
  std::string extra_sock = s.vm_dir + "/extra-monitor.sock";
  std::string main_state = probe_qmp(main_sock);
  if (main_state == "ok") {
    s.qmp = main_sock;
  } else if (probe_qmp(extra_sock) == "ok") {
    s.qmp = extra_sock;
  } else if (main_state == "held") {
    throw Error("sandbox " + id + ": qmp.sock is held by the Kata shim and there is no extra-monitor.sock",
                ExitCode::failed, k_monitor_hint);
  } else {
    throw Error("sandbox " + id + ": no QMP monitor answers in " + s.vm_dir + " (is the sandbox running?)");
  }
  return s;
}

namespace {

// One endpoint of persist.json's Network.Endpoints: {"Type": "virtual", "Veth": {"NetPair": {...}}}
// and the like; the pair (or tap) carries the tap and the interface it is connected to.
nlohmann::json endpoint_record(const nlohmann::json& e) {
  nlohmann::json out = {{"type", e.value("Type", "")}};
  for (const auto& [key, body] : e.items()) {
    if (!body.is_object()) {
      continue;
    }
    const nlohmann::json& pair = body.contains("NetPair")
                                   ? body["NetPair"]
                                   : body.value("TapInterface", body.value("TuntapInterface", body));
    if (pair.contains("TAPIface")) {
      out["tap"] = pair["TAPIface"].value("Name", "");
    }
    if (pair.contains("VirtIface")) {
      out["interface"] = pair["VirtIface"].value("Name", "");
      out["mac"] = pair["VirtIface"].value("HardAddr", "");
    }
    if (pair.contains("NetInterworkingModel")) {
      out["interworking_model"] = pair["NetInterworkingModel"];
    }
  }
  return out;
}

} // namespace

nlohmann::json sandbox_record(const Sandbox& s, const std::string& kata_root) {
  nlohmann::json record = {{"id", s.id}, {"runtime", s.runtime}};
  std::string path = under(kata_root, "/run/vc/sbs/" + s.id + "/persist.json");
  if (s.runtime != "go" || !fs::exists(path)) {
    return record;
  }
  try {
    nlohmann::json state = nlohmann::json::parse(read_file(path));
    const nlohmann::json& net = state.value("Network", nlohmann::json::object());
    nlohmann::json endpoints = nlohmann::json::array();
    for (const auto& e : net.value("Endpoints", nlohmann::json::array())) {
      endpoints.push_back(endpoint_record(e));
    }
    record["persist"] = {{"file", path},
                         {"state", state.value("State", "")},
                         {"netns", net.value("NetworkID", "")},
                         {"endpoints", endpoints}};
  } catch (const std::exception& e) { // persist.json is informative: a bad one does not stop a save
    std::fprintf(stderr, "kata-snapshot: warning: ignoring %s: %s\n", path.c_str(), e.what());
  }
  return record;
}

std::string resolve_qmp(const std::string& qmp, const std::string& sandbox, const std::string& kata_root) {
  if (qmp.empty() == sandbox.empty()) {
    throw Error("give exactly one of --qmp SOCKET and --sandbox ID", ExitCode::usage);
  }
  return qmp.empty() ? find_sandbox(sandbox, kata_root).qmp : qmp;
}

nlohmann::json list_vms(const std::string& kata_root) {

  nlohmann::json out = nlohmann::json::array();
  for (pid_t pid : qemu_pids()) {
    std::vector<std::string> cmdline;
    try {
      cmdline = read_proc_cmdline(pid);
    } catch (const Error&) {
      continue;
    }
    QemuArgv argv(cmdline);
    std::string name =
      argv.first("name") ? OptionValue::parse(*argv.first("name")).items().front().second : "";
    std::string sandbox = name.rfind("sandbox-", 0) == 0 ? name.substr(8) : "";
    std::string qmp;
    for (const auto& q : argv.all("qmp")) {
      std::string v = q.items().front().second;
      if (v.rfind("unix:", 0) == 0 && v.find("fd=") == std::string::npos) {
        qmp = v.substr(5);
      }
    }
    std::string qmp_state = probe_qmp(qmp);
    if (!sandbox.empty() && qmp_state != "ok") {
      try {
        qmp = find_sandbox(sandbox, kata_root).qmp;
        qmp_state = "ok";
      } catch (const Error&) {
      }
    }
    nlohmann::json shares = nlohmann::json::array();
    for (const auto& d : argv.all("device")) {
      if (d.driver() == "vhost-user-fs-pci") {
        shares.push_back(d.get("tag").value_or(""));
      }
    }
    std::string helper = "no port";
    if (auto path = helper_socket_path(argv)) {
      try {
        guest::Channel::connect(*path, Millis(1500));
        helper = "answers";
      } catch (const Error&) {
        helper = "silent";
      }
    }
    out.push_back({{"pid", pid},
                   {"name", name},
                   {"sandbox", sandbox},
                   {"memory", argv.first("m") ? split(*argv.first("m"), ',')[0] : ""},
                   {"shares", shares},
                   {"qmp", qmp},
                   {"qmp_state", qmp_state},
                   {"helper", helper}});
  }
  return out;
}

} // namespace ks
