#include "snapshot/host_check.hpp"

#include "util/child_process.hpp"
#include "util/error.hpp"
#include "util/strings.hpp"

#include <regex>
#include <unistd.h>

namespace ks {

std::vector<int> parse_version(const std::string& text) {
  std::vector<int> v;
  for (const auto& part : split(text, '.')) {
    try {
      v.push_back(std::stoi(part));
    } catch (const std::exception&) {
      v.push_back(0);
    }
  }
  v.resize(3, 0);
  return v;
}

nlohmann::json HostCheck::to_json() const {
  return {
    {"loadable", problems.empty()}, {"qemu", qemu}, {"qemu_version", qemu_version}, {"problems", problems}};
}

std::string qemu_binary(const nlohmann::json& manifest, const std::string& qemu_override) {
  if (!qemu_override.empty()) {
    return qemu_override;
  }
  std::string recorded = manifest["qemu"].value("binary", "");
  if (!recorded.empty() && ::access(recorded.c_str(), X_OK) == 0) {
    return recorded;
  }
  return "qemu-system-x86_64";
}

HostCheck check_host(const nlohmann::json& manifest, const std::string& qemu_override) {
  HostCheck c;
  c.qemu = qemu_binary(manifest, qemu_override);

  CommandResult r{127, {}, {}};
  try {
    r = run_command({c.qemu, "--version"}, std::chrono::seconds(10));
  } catch (const Error& e) {
    c.problems.push_back(std::string("QEMU cannot be run: ") + e.what());
    return c;
  }
  std::smatch m;
  if (r.status != 0 || !std::regex_search(r.output, m, std::regex(R"(version (\d+\.\d+(\.\d+)?))"))) {
    c.problems.push_back(c.qemu + " --version failed or printed no version");
    return c;
  }
  c.qemu_version = m[1];
  std::string recorded = manifest["qemu"].value("version", "0.0.0");
  if (parse_version(c.qemu_version) < parse_version(recorded)) {
    c.problems.push_back("QEMU " + c.qemu_version + " is older than the QEMU " + recorded +
                         " that took the snapshot (QEMU loads streams from the same or older versions)");
  }
  std::string machine = manifest["qemu"].value("machine", "");
  // The same QEMU version has every machine type it had when the snapshot was taken.
  if (!machine.empty() && parse_version(c.qemu_version) != parse_version(recorded)) {
    CommandResult mh = run_command({c.qemu, "-machine", "help"}, std::chrono::seconds(10));
    if (!std::regex_search(
          mh.output,
          std::regex("(^|\\n)" + std::regex_replace(machine, std::regex(R"([.])"), R"(\.)") + "\\s"))) {
      c.problems.push_back("QEMU " + c.qemu_version + " has no machine type " + machine);
    }
  }
  return c;
}

void require_loadable(const HostCheck& check) {
  if (!check.problems.empty()) {
    throw Error("this host cannot load the snapshot: " + join(check.problems, "; "),
                ExitCode::archive_invalid, "pass --qemu PATH to use another QEMU binary");
  }
}

} // namespace ks
