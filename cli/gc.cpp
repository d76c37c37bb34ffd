// kata-snapshot gc oci:DIR: remove the blobs no snapshot references.
#include "cli/common.hpp"
#include "storage/store/repository.hpp"
#include "util/strings.hpp"

namespace ks::cli {

void add_gc(CLI::App& app, Registry& reg) {
  struct Args {
    std::string ref;
    RepoOptions o;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("gc", "Remove the blobs of an oci: repository that no snapshot references");
  cmd->add_option("repository", a->ref, "oci:DIR")->required();
  cmd->add_flag("--dry-run", a->o.dry_run, "Only say what would be removed");
  add_lock_wait_option(*cmd, a->o.lock_wait);
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg, a] {
    reg.action = [&reg, a] {
      Json r = gc_repository(a->ref, a->o);
      std::string human = std::string(a->o.dry_run ? "would remove " : "removed ") +
                          std::to_string(r["removed"].size()) + " blob(s), " +
                          human_size(r.value("bytes_freed", 0ull)) + "; " +
                          std::to_string(r.value("referenced", 0)) + " referenced blob(s) kept";
      print_result(reg.global, r, reg.global.quiet ? "" : human);
      return 0;
    };
  });
}

} // namespace ks::cli
