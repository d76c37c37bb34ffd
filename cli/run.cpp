#include "cli/run.hpp"

#include "cli/common.hpp"
#include "cli/version.hpp"
#include "util/cancel.hpp"
#include "util/error.hpp"
#include "util/fault.hpp"

#include <cstdio>
#include <iostream>

namespace ks::cli {

void add_output_flags(CLI::App& cmd, GlobalOptions& global) {
  cmd.add_flag("--json", global.json, "Machine-readable JSON on stdout");
  cmd.add_flag("-v,--verbose", global.verbose, "More detail on stderr");
  cmd.add_flag("-q,--quiet", global.quiet, "Only errors on stderr");
}

void add_lock_wait_option(CLI::App& cmd, std::chrono::milliseconds& wait) {
  cmd
    .add_option_function<double>(
      "--lock-wait", [&wait](double s) { wait = std::chrono::milliseconds(static_cast<int64_t>(s * 1000)); },
      "Seconds to wait for a repository another kata-snapshot has locked, then exit 4 (default 60)")
    ->check(CLI::Range(0.0, 86400.0));
}

void add_registry_options(CLI::App& cmd, RegistryOptions& o, const std::string& prefix) {
  std::string what = prefix.empty() ? "" : prefix == "src-" ? " of the source" : " of the destination";
  cmd.add_option("--" + prefix + "creds", o.creds, "USER:PASSWORD for a docker:// registry" + what);
  if (prefix.empty()) {
    cmd.add_option("--authfile", o.authfile,
                   "containers-auth.json(5) file with registry credentials (default: $REGISTRY_AUTH_FILE, "
                   "$XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json)");
  }
  cmd.add_option(
    "--" + prefix + "cert-dir", o.tls.cert_dir,
    "Directory of CA certificates (*.crt) and a client certificate (*.cert, *.key) for the registry" + what);
  cmd.add_flag("--" + prefix + "tls-verify", o.tls.verify,
               "Verify the registry's TLS certificate" + what +
                 " (default true; false also allows plain HTTP)");
}

void print_result(const GlobalOptions& global, const nlohmann::json& json, const std::string& human) {
  if (global.json) {
    std::cout << json.dump(2) << std::endl;
  } else if (!human.empty()) {
    std::cout << human << (human.back() == '\n' ? "" : "\n") << std::flush;
  }
}

void note(const GlobalOptions& global, const std::string& line) {
  if (!global.quiet) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

namespace {

int report(const Error& e) {
  std::fprintf(stderr, "kata-snapshot: error: %s\n", e.what());
  if (!e.hint().empty()) {
    std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
  }
  return static_cast<int>(e.code());
}

} // namespace

int run(int argc, char** argv) {
  CLI::App app{"kata-snapshot: whole-VM snapshots of QEMU virtual machines and Kata sandboxes"};
  app.set_version_flag("--version", version_line());
  app.require_subcommand(1);
  Registry reg;
  add_save(app, reg);
  add_load(app, reg);
  add_inspect(app, reg);
  add_verify(app, reg);
  add_ps(app, reg);
  add_containers(app, reg);

  add_guest(app, reg);
  add_check_kernel(app, reg);
  add_copy(app, reg);
  add_list(app, reg);
  add_prune(app, reg);
  add_check(app, reg);
  add_gc(app, reg);
  add_watchdog(app, reg);
  add_version(app, reg);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : static_cast<int>(ExitCode::usage);
  }
  install_cancel_handlers();
  try {
    check_fault_setting();
    return reg.action();
  } catch (const Error& e) {
    return report(e);
  } catch (const std::exception& e) {
    return report(Error(e.what()));
  }
}

} // namespace ks::cli
