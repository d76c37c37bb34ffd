// kata-snapshot list oci:DIR[:TAG]: the snapshots of a repository.
#include "cli/common.hpp"
#include "storage/store/repository.hpp"
#include "util/strings.hpp"

#include <cstdio>

namespace ks::cli {

void add_list(CLI::App& app, Registry& reg) {
  auto ref = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("list", "List the snapshots of an oci: repository, oldest first");
  cmd->add_option("repository", *ref, "oci:DIR (or oci:DIR:TAG for one snapshot)")->required();
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg, ref] {
    reg.action = [&reg, ref] {
      Json list = list_snapshots(*ref);
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
