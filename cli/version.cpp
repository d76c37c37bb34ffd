// kata-snapshot version [--json]; --version
#include "cli/version.hpp"

#include "cli/common.hpp"
#include "storage/manifest.hpp"

namespace ks::cli {

std::string version_line() {
  return std::string("kata-snapshot ") + build_version() + " (commit " + build_commit() + ")";
}

nlohmann::json version_json() {
  nlohmann::json versions = nlohmann::json::array();
  for (int v = 1; v <= k_format_version; ++v) {
    versions.push_back(v);
  }
  // A save writes the lowest version that describes its archive (docs/archive-format.md), so
  // every version it reads it may also write.
  return {{"version", build_version()},
          {"commit", build_commit()},
          {"archive_format", {{"name", k_format_name}, {"reads", versions}, {"writes", versions}}}};
}

void add_version(CLI::App& app, Registry& reg) {
  auto* cmd = app.add_subcommand("version", "Show the version, the git commit and the archive formats");
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg] {
    reg.action = [&reg] {
      nlohmann::json j = version_json();
      std::string human = version_line() + "\narchive format versions read and written: 1 to " +
                          std::to_string(k_format_version);
      print_result(reg.global, j, human);
      return 0;
    };
  });
}

} // namespace ks::cli
