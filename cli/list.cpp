// kata-snapshot list oci:DIR[:TAG]: the snapshots of a repository.
#include "cli/common.hpp"
#include "storage/store/repository.hpp"
#include "util/strings.hpp"

#include <cstdio>

namespace ks::cli {

void add_list(CLI::App& app, Registry& reg) {
  struct Args {
    std::string ref;
    RegistryOptions registry;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("list", "List the snapshots of a repository, oldest first");
  cmd->add_option("repository", a->ref, k_repository_help)->required();
  add_registry_options(*cmd, a->registry);
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg, a] {
    reg.action = [&reg, a] {
      Json list = list_snapshots(a->ref, a->registry);
      std::string human =
        "TAG                   CREATED               SIZE       ONLY HERE  HOST / SANDBOX, LABELS\n";
      for (const auto& s : list) {
        char line[512];
        std::string who =
          s.value("host", "") + (s.value("sandbox", "").empty() ? "" : " / " + s.value("sandbox", ""));
        for (auto it = s["labels"].begin(); it != s["labels"].end(); ++it) {
          who += " " + it.key() + "=" + it->get<std::string>();
        }
        std::snprintf(line, sizeof line, "%-21s %-21s %-10s %-10s %s\n", s.value("tag", "").c_str(),
                      s.value("created", "").c_str(), human_size(s.value("size", 0ull)).c_str(),
                      human_size(s.value("unique_size", 0ull)).c_str(), who.c_str());
        human += line;
      }
      print_result(reg.global, Json{{"snapshots", list}}, reg.global.quiet ? "" : human);
      return 0;
    };
  });
}

} // namespace ks::cli
