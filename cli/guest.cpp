// kata-snapshot guest ping|freeze|thaw|status: talk to the helper inside a VM.
#include "cli/common.hpp"
#include "snapshot/guest_ops.hpp"
#include "snapshot/kata.hpp"

namespace ks::cli {

namespace {

struct GuestOptions {
  std::string qmp;
  std::string sandbox;
  std::string kata_root = "/";
  unsigned freeze_timeout = 60;
};

int run_guest(const std::string& verb, const GuestOptions& o, const GlobalOptions& g) {
  GuestTarget target{resolve_qmp(o.qmp, o.sandbox, o.kata_root)};
  nlohmann::json result;
  if (verb == "ping") {
    result = guest_ping(target);
  } else if (verb == "freeze") {
    result = guest_freeze(target, std::chrono::seconds(o.freeze_timeout));
  } else if (verb == "thaw") {
    result = guest_thaw(target);
  } else if (verb == "refresh") {
    result = guest_refresh(target);
  } else {
    result = guest_status(target);
  }
  std::string human;
  if (verb == "ping") {
    human = "guest helper answers (" + result.value("version", std::string("?")) + ")";
  } else if (verb == "status") {
    human = "guest filesystems: " + result.value("status", std::string("?"));
  } else if (verb == "refresh") {
    human = "guest refreshed: clock corrected by " + std::to_string(result.value("clock_delta_ms", 0LL)) +
            " ms, " + std::to_string(result.value("entropy_bytes", 0)) + " bytes of host entropy" +
            (result.value("crng_reseeded", false) ? ", RNG reseeded" : "");
  } else {
    human = std::string(verb == "freeze" ? "froze " : "thawed ") +
            std::to_string(result.value("filesystems", 0)) + " filesystem(s)";
  }
  print_result(g, result, human);
  return 0;
}

} // namespace

void add_guest(CLI::App& app, Registry& reg) {
  auto* guest = app.add_subcommand("guest", "Talk to kata-snapshot-helper inside a running VM");
  guest->require_subcommand(1);
  auto opts = std::make_shared<GuestOptions>();
  for (const char* verb : {"ping", "freeze", "thaw", "status", "refresh"}) {
    static const std::map<std::string, std::string> help = {
      {"ping", "Check that the helper answers"},
      {"freeze", "Sync and freeze the guest's filesystems (auto-thaws after --timeout)"},
      {"thaw", "Thaw the guest's filesystems"},
      {"status", "Show whether the guest's filesystems are frozen"},
      {"refresh", "After a restore: thaw, set the guest's clock from the host, add host entropy, reseed"}};
    auto* cmd = guest->add_subcommand(verb, help.at(verb));
    cmd->add_option("--qmp", opts->qmp, "QMP socket of the VM");
    cmd->add_option("--sandbox", opts->sandbox, "Kata sandbox id (instead of --qmp)");
    cmd->add_option("--kata-root", opts->kata_root, "Prefix of Kata's /run paths (default /)");
    if (std::string(verb) == "freeze") {
      cmd->add_option("--timeout", opts->freeze_timeout,
                      "Seconds after which the guest thaws itself (default 60)");
    }
    add_output_flags(*cmd, reg.global);
    std::string v = verb;
    cmd->callback(
      [&reg, opts, v] { reg.action = [&reg, opts, v] { return run_guest(v, *opts, reg.global); }; });
  }
}

} // namespace ks::cli
