// kata-snapshot prune oci:DIR --keep-*: untag what the retention rules do not keep.
#include "cli/common.hpp"
#include "storage/store/repository.hpp"
#include "util/strings.hpp"

namespace ks::cli {

void add_prune(CLI::App& app, Registry& reg) {
  struct Args {
    std::string ref;
    KeepPolicy policy;
    RepoOptions o;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
    "prune", "Remove the snapshots no --keep-* rule keeps (restic's rules); `gc` then frees their blobs");
  cmd->add_option("repository", a->ref, "oci:DIR or docker://HOST/REPO")->required();
  add_registry_options(*cmd, a->o.registry);
  cmd->add_option("--keep-last", a->policy.last, "Keep the N newest snapshots");
  cmd->add_option("--keep-hourly", a->policy.hourly, "Keep the newest snapshot of each of the last N hours");
  cmd->add_option("--keep-daily", a->policy.daily, "Keep the newest snapshot of each of the last N days");
  cmd->add_option("--keep-weekly", a->policy.weekly, "Keep the newest snapshot of each of the last N weeks");
  cmd->add_option("--keep-monthly", a->policy.monthly,
                  "Keep the newest snapshot of each of the last N months");
  cmd->add_option("--keep-tag", a->policy.tags, "Keep snapshots tagged T, or labelled T (KEY or KEY=VALUE)");
  cmd->add_flag("--dry-run", a->o.dry_run, "Only say what would be removed");
  add_lock_wait_option(*cmd, a->o.lock_wait);
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg, a] {
    reg.action = [&reg, a] {
      Json r = prune_snapshots(a->ref, a->policy, a->o);
      std::string human;
      for (const auto& s : r["kept"]) {
        std::vector<std::string> reasons = s.value("reasons", std::vector<std::string>{});
        std::string why = join(reasons, ", ");
        human += "keep    " + s.value("tag", "") + "  " + s.value("created", "") + "  (" + why + ")\n";
      }
      for (const auto& s : r["removed"]) {
        human += std::string(a->o.dry_run ? "would remove " : "remove  ") + s.value("tag", "") + "  " +
                 s.value("created", "") + "\n";
      }
      human += std::to_string(r["removed"].size()) + " snapshot(s) " + (a->o.dry_run ? "would be " : "") +
               "removed; run `kata-snapshot gc " + a->ref + "` to free their blobs";
      print_result(reg.global, r, reg.global.quiet ? "" : human);
      return 0;
    };
  });
}

} // namespace ks::cli
