// kata-snapshot ps: the Kata sandboxes and QEMU VMs on this host.
#include "cli/common.hpp"
#include "snapshot/kata.hpp"
#include "util/strings.hpp"

#include <cstdio>

namespace ks::cli {

void add_ps(CLI::App& app, Registry& reg) {
  auto kata_root = std::make_shared<std::string>("/");
  auto* cmd = app.add_subcommand("ps", "List the Kata sandboxes and QEMU VMs on this host");
  cmd->add_option("--kata-root", *kata_root, "Prefix of Kata's /run paths (default /)");
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg, kata_root] {
    reg.action = [&reg, kata_root] {
      nlohmann::json vms = list_vms(*kata_root);
      char line[512];
      std::snprintf(line, sizeof line, "%-8s %-24s %-8s %-14s %-10s %s\n", "PID", "SANDBOX/NAME", "MEMORY",
                    "SHARES", "QMP", "HELPER");
      std::string human = line;
      for (const auto& v : vms) {
        std::string name =
          v["sandbox"].get<std::string>().empty() ? v.value("name", "-") : v.value("sandbox", "");
        std::string shares = join(v["shares"].get<std::vector<std::string>>(), ",");
        std::snprintf(line, sizeof line, "%-8d %-24s %-8s %-14s %-10s %s\n", v["pid"].get<int>(),
                      name.empty() ? "-" : name.c_str(), v.value("memory", "").c_str(),
                      shares.empty() ? "-" : shares.c_str(), v.value("qmp_state", "").c_str(),
                      v.value("helper", "").c_str());
        human += line;
      }
      print_result(reg.global, vms, human);
      return 0;
    };
  });
}

} // namespace ks::cli
