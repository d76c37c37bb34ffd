// kata-snapshot containers (--sandbox ID | --qmp SOCKET): what container mode can checkpoint
// in a running VM, and why not where it cannot.
#include "cli/common.hpp"
#include "snapshot/container.hpp"
#include "snapshot/kata.hpp"

namespace ks::cli {

void add_containers(CLI::App& app, Registry& reg) {
  struct Args {
    std::string qmp;
    std::string sandbox;
    std::string kata_root = "/";
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
    "containers", "List the containers in a running VM that save --container can checkpoint, and why not");
  cmd->add_option("--qmp", a->qmp, "QMP socket of the VM");
  cmd->add_option("--sandbox", a->sandbox, "Kata sandbox id (instead of --qmp)");
  cmd->add_option("--kata-root", a->kata_root, "Prefix of Kata's /run paths (default /)");
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg, a] {
    reg.action = [&reg, a] {
      nlohmann::json r = list_containers({resolve_qmp(a->qmp, a->sandbox, a->kata_root)});
      char line[512];
      std::snprintf(line, sizeof line, "%-24s %-8s %-7s %-13s %s\n", "CONTAINER", "STATE", "PID",
                    "CHECKPOINT", "WHY NOT");
      std::string human = line;
      for (const auto& c : r.value("containers", nlohmann::json::array())) {
        const auto problems = c.value("problems", nlohmann::json::array());
        std::string why = problems.empty() ? "" : problems[0].value("problem", "");
        if (problems.size() > 1) {
          why += " (+" + std::to_string(problems.size() - 1) + " more)";
        }
        std::snprintf(line, sizeof line, "%-24s %-8s %-7lld %-13s %s\n", c.value("id", "").c_str(),
                      c.value("state", "").c_str(), c.value("pid", 0LL),
                      c.value("checkpointable", false) ? "yes" : "no", why.c_str());
        human += line;
      }
      if (r.value("containers", nlohmann::json::array()).empty()) {
        human += "(no containers in this VM)\n";
      }
      print_result(reg.global, r, human);
      return 0;
    };
  });
}

} // namespace ks::cli
