// kata-snapshot copy SRC DST: between .ksnap files, pipes and repositories, every member checked.
#include "cli/common.hpp"
#include "storage/store/repository.hpp"
#include "util/strings.hpp"

namespace ks::cli {

void add_copy(CLI::App& app, Registry& reg) {
  struct Args {
    std::string src, dst;
    RepoOptions o;
  };
  auto a = std::make_shared<Args>();
  auto* cmd =
    app.add_subcommand("copy", "Copy a snapshot between .ksnap files, pipes, repositories and registries");
  cmd
    ->add_option("src", a->src,
                 "Source: FILE, -, oci:DIR[:TAG] or docker://HOST/REPO[:TAG|@DIGEST] (no tag: the newest)")
    ->required();
  cmd
    ->add_option("dst", a->dst,
                 "Destination: FILE, -, oci:DIR[:TAG] or docker://HOST/REPO[:TAG] (no tag: the UTC time)")
    ->required();
  cmd->add_option_function<std::string>(
    "--authfile", [a](const std::string& f) { a->o.registry.authfile = a->o.dest_registry.authfile = f; },
    "containers-auth.json(5) file with registry credentials, for both sides");
  add_registry_options(*cmd, a->o.registry, "src-");
  add_registry_options(*cmd, a->o.dest_registry, "dest-");
  cmd->add_flag("--force", a->o.overwrite, "Replace an existing file or tag");
  add_lock_wait_option(*cmd, a->o.lock_wait);
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg, a] {
    reg.action = [&reg, a] {
      a->o.progress = !reg.global.quiet && !reg.global.json;
      Json r = copy_snapshot(a->src, a->dst, a->o);
      std::string human = "copied " + r.value("source", a->src) + " to " + r.value("output", a->dst) + ": " +
                          std::to_string(r.value("members", 0)) + " members, " +
                          human_size(r.value("bytes", 0ull)) +
                          (r.contains("digest") ? " (" + r.value("digest", "") + ")" : std::string());
      if (a->dst == "-") {
        note(reg.global, human);
        return 0;
      }
      print_result(reg.global, r, reg.global.quiet ? "" : human);
      return 0;
    };
  });
}

} // namespace ks::cli
