// What every subcommand shares: global flags and output helpers.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "storage/store/registry.hpp"

namespace ks::cli {

enum class Verbosity { quiet, normal, verbose };

struct GlobalOptions {
  bool json = false;
  bool verbose = false;
  bool quiet = false;
  Verbosity verbosity() const {
    return quiet ? Verbosity::quiet : (verbose ? Verbosity::verbose : Verbosity::normal);
  }
};

// The help of a command's snapshot argument.
inline constexpr const char* k_snapshot_help =
  "Snapshot: a .ksnap FILE, - for stdin, oci:DIR[:TAG] or docker://HOST/REPO[:TAG|@DIGEST] "
  "(no tag: the newest)";

inline constexpr const char* k_repository_help = "oci:DIR or docker://HOST/REPO (with :TAG, one snapshot)";

// Adds --json, -v and -q to a subcommand.
void add_output_flags(CLI::App& cmd, GlobalOptions& global);

// Adds --lock-wait SECONDS: how long to wait for a repository another command has locked.
void add_lock_wait_option(CLI::App& cmd, std::chrono::milliseconds& wait);

// Adds skopeo's registry flags: --creds, --authfile, --cert-dir, --tls-verify (with PREFIX
// "src-" or "dest-", copy's per-side --src-creds and so on, and no --authfile).
void add_registry_options(CLI::App& cmd, RegistryOptions& options, const std::string& prefix = "");

// Prints JSON on stdout (machine output) or the human text, per --json.
void print_result(const GlobalOptions& global, const nlohmann::json& json, const std::string& human);

// A status line on stderr, unless -q.
void note(const GlobalOptions& global, const std::string& line);

// The subcommand's action, run inside the single top-level error handler.
using Action = std::function<int()>;

struct Registry {
  GlobalOptions global;
  Action action;
};

void add_guest(CLI::App& app, Registry& reg);
void add_save(CLI::App& app, Registry& reg);
void add_watchdog(CLI::App& app, Registry& reg);
void add_load(CLI::App& app, Registry& reg);
void add_inspect(CLI::App& app, Registry& reg);
void add_verify(CLI::App& app, Registry& reg);
void add_ps(CLI::App& app, Registry& reg);
void add_containers(CLI::App& app, Registry& reg);
void add_check_kernel(CLI::App& app, Registry& reg);
void add_copy(CLI::App& app, Registry& reg);
void add_list(CLI::App& app, Registry& reg);
void add_prune(CLI::App& app, Registry& reg);
void add_check(CLI::App& app, Registry& reg);
void add_gc(CLI::App& app, Registry& reg);
void add_version(CLI::App& app, Registry& reg);

} // namespace ks::cli
