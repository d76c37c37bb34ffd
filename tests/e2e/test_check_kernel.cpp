// check-kernel against the real Debian guest kernel's config, and a copy with options removed.
#include "tests/e2e/guest_vm.hpp"
#include "util/fd.hpp"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <filesystem>
#include <nlohmann/json.hpp>

using namespace ks;
using namespace ks::test;

namespace {

std::string debian_config() {
  std::string dir = std::string(KSNAP_SOURCE_DIR) + "/.cache/kernel/boot";
  if (!std::filesystem::exists(dir)) {
    skip("the guest kernel is not downloaded (run `make test`)");
  }
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().filename().string().rfind("config-", 0) == 0) {
      return e.path();
    }
  }
  skip("no config-* in " + dir);
}

} // namespace

TEST_CASE("check-kernel: the Debian guest kernel has what both modes need") {
  std::string config = debian_config();
  for (const char* mode : {"vm", "criu"}) {
    CommandResult r = run_cli({"check-kernel", config, "--mode", mode, "--json"});
    INFO(mode << ": " << r.output << r.error_output);
    CHECK(r.status == 0);
    CHECK(nlohmann::json::parse(r.output)["ok"] == true);
  }
  // Debian builds what CRIU loads as modules: the guest must load them before CRIU runs.
  CommandResult criu = run_cli({"check-kernel", config, "--mode", "criu"});
  CHECK_THAT(criu.output, Catch::Contains("module:      CONFIG_UNIX_DIAG=m"));
  CHECK_THAT(criu.output, Catch::Contains("module:      CONFIG_NF_TABLES=m"));
  CHECK_THAT(criu.output, Catch::Contains("docs/containers.md"));
}

TEST_CASE("check-kernel: a config with options removed is reported and exits non-zero") {
  std::string text = read_file(debian_config());
  TempDir dir;
  for (const char* option :
       {"CONFIG_VIRTIO_FS=", "CONFIG_CHECKPOINT_RESTORE=", "CONFIG_TIME_NS=", "CONFIG_NF_TABLES="}) {
    size_t pos = text.find(std::string("\n") + option);
    REQUIRE(pos != std::string::npos);
    text.erase(pos + 1, text.find('\n', pos + 1) - pos);
  }
  std::string cut = dir / "config-cut";
  write_all(open_file(cut, O_WRONLY | O_CREAT | O_TRUNC).get(), text, cut);
  CommandResult vm = run_cli({"check-kernel", cut, "--mode", "vm"});
  CHECK(vm.status == 1);
  CHECK_THAT(vm.output, Catch::Contains("missing:     CONFIG_VIRTIO_FS=y"));
  CommandResult criu = run_cli({"check-kernel", cut, "--mode", "criu", "--json"});
  CHECK(criu.status == 1);
  auto missing = nlohmann::json::parse(criu.output)["missing"];
  CHECK(missing.size() == 3);
  CHECK(missing.dump().find("CONFIG_CHECKPOINT_RESTORE") != std::string::npos);
  CHECK(missing.dump().find("CONFIG_TIME_NS") != std::string::npos);
  CHECK(missing.dump().find("CONFIG_NF_TABLES") != std::string::npos); // CRIU's network lock
}
