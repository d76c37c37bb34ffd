// kata-snapshot check oci:DIR [--read-data]: is every snapshot of a repository whole?
#include "cli/common.hpp"
#include "storage/store/repository.hpp"
#include "util/error.hpp"

namespace ks::cli {

void add_check(CLI::App& app, Registry& reg) {
  struct Args {
    std::string ref;
    bool read_data = false;
    RegistryOptions registry;
  };
  auto a = std::make_shared<Args>();
  auto* cmd =
    app.add_subcommand("check", "Check a repository: manifests, blobs, and with --read-data every byte");
  cmd->add_option("repository", a->ref, k_repository_help)->required();
  add_registry_options(*cmd, a->registry);
  cmd->add_flag("--read-data", a->read_data, "Also hash every blob and decompress every vmstate chunk");
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg, a] {
    reg.action = [&reg, a] {
      Json r = check_repository(a->ref, a->read_data, a->registry);
      std::string human;
      for (const auto& p : r["problems"]) {
        std::string users;
        for (const auto& u : p["needed_by"]) {
          users += (users.empty() ? "" : ", ") + u.get<std::string>();
        }
        human += "damaged: blob " + p.value("blob", "") + " " + p.value("problem", "") + "; needed by " +
                 users + "\n";
      }
      human += a->ref + ": " + std::to_string(r.value("snapshots", 0)) + " snapshot(s), " +
               std::to_string(r.value("blobs", 0)) + " blobs, " +
               (r.value("ok", false) ? "no problems" : std::to_string(r["problems"].size()) + " problem(s)") +
               (a->read_data ? " (data read)" : " (data not read; --read-data reads it)");
      print_result(reg.global, r, reg.global.quiet && r.value("ok", false) ? "" : human);
      return r.value("ok", false) ? 0 : static_cast<int>(ExitCode::archive_invalid);
    };
  });
}

} // namespace ks::cli
