// kata-snapshot check-kernel CONFIG [--mode vm|criu]
#include "kernel-fragments/check_kernel.hpp"
#include "cli/common.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"

namespace ks::cli {

namespace {

std::string describe(const KernelCheck& c, const std::string& config, const std::string& mode) {
  std::string s;
  for (const auto& o : c.missing) {
    s += "missing:     " + o.name + "=" + o.want + "\n";
  }
  for (const auto& o : c.advisory) {
    s += "recommended: " + o.name + "=" + o.want + "\n";
  }
  for (const auto& m : c.modules) {
    s += "module:      " + m + "=m (load it at boot)\n";
  }
  if (mode == "criu" && !c.modules.empty()) {
    s += "note:        CRIU refuses to start until the socket diag modules and nf_tables are loaded;\n"
         "             without modprobe, insmod them in the order docs/containers.md gives\n";
  }
  s += config + ": " + (c.ok() ? "has" : "lacks") + " what " + mode + " mode needs (" +
       std::to_string(c.checked) + " options checked, " + std::to_string(c.missing.size()) + " missing)";
  return s;
}

} // namespace

void add_check_kernel(CLI::App& app, Registry& reg) {
  struct Args {
    std::string config;
    std::string mode = "vm";
  };
  auto a = std::make_shared<Args>();
  auto* cmd =
    app.add_subcommand("check-kernel", "List what a guest kernel .config lacks for a snapshot mode");
  cmd->add_option("config", a->config, "The guest kernel's .config")->required();
  cmd->add_option("--mode", a->mode, "vm (whole-VM snapshots) or criu (per-container CRIU)")
    ->check(CLI::IsMember({"vm", "criu"}));
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg, a] {
    reg.action = [&reg, a] {
      KernelMode mode = a->mode == "criu" ? KernelMode::criu : KernelMode::vm;
      KernelCheck c = check_kernel_config(read_file(a->config), parse_fragment(kernel_fragment(mode)));
      print_result(reg.global, c.to_json(), describe(c, a->config, a->mode));
      return c.ok() ? 0 : static_cast<int>(ExitCode::failed);
    };
  });
}

} // namespace ks::cli
