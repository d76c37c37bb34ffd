// kata-snapshot watchdog --fd N: not for operators. A save starts it to put the VM back if
// the save is killed, a load to stop what it started (snapshot/watchdog.hpp); it is hidden
// from --help.
#include "snapshot/watchdog.hpp"
#include "cli/common.hpp"

namespace ks::cli {

void add_watchdog(CLI::App& app, Registry& reg) {
  auto fd = std::make_shared<int>(-1);
  auto* cmd = app.add_subcommand("watchdog", "Internal: guards a running save or load against being killed");
  cmd->group(""); // hidden
  cmd->add_option("--fd", *fd, "The pipe from the save")->required();
  cmd->add_option(
    "--qmp", [](const std::vector<std::string>&) { return true; },
    "The VM a save's watchdog guards (for ps)");
  cmd->add_option(
    "--load", [](const std::vector<std::string>&) { return true; }, "The run directory of a load (for ps)");
  cmd->add_option(
    "--output", [](const std::vector<std::string>&) { return true; },
    "The output of a container-mode save (for ps)");
  cmd->callback([&reg, fd] { reg.action = [fd] { return run_watchdog(*fd); }; });
}

} // namespace ks::cli
