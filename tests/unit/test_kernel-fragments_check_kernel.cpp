#include "kernel-fragments/check_kernel.hpp"

#include <catch2/catch.hpp>

using namespace ks;

TEST_CASE("check-kernel: fragments parse with required, recommended and disabled options") {
  auto f = parse_fragment("# comment\nCONFIG_A=y\n# ksnap: recommended\nCONFIG_B=m\n# CONFIG_C is not set\n");
  REQUIRE(f.size() == 3);
  CHECK((f[0].name == "CONFIG_A" && f[0].want == "y" && f[0].required));
  CHECK((f[1].name == "CONFIG_B" && !f[1].required));
  CHECK((f[2].name == "CONFIG_C" && f[2].want == "n" && f[2].required));
}

TEST_CASE("check-kernel: missing, module and recommended options are told apart") {
  auto f = parse_fragment("CONFIG_A=y\nCONFIG_B=y\n# ksnap: recommended\nCONFIG_R=y\nCONFIG_D=y\n");
  KernelCheck c = check_kernel_config("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_D is not set\n", f);
  CHECK_FALSE(c.ok());
  REQUIRE(c.missing.size() == 1);
  CHECK(c.missing[0].name == "CONFIG_D");
  REQUIRE(c.advisory.size() == 1);
  CHECK(c.advisory[0].name == "CONFIG_R");
  CHECK(c.modules == std::vector<std::string>{"CONFIG_B"});
}

TEST_CASE("check-kernel: both embedded fragments name what the issue requires") {
  std::string vm = kernel_fragment(KernelMode::vm);
  for (const char* o :
       {"CONFIG_VIRTIO_CONSOLE=y", "CONFIG_VIRTIO_FS=y", "CONFIG_FUSE_FS=y", "CONFIG_VSOCKETS=y"}) {
    CHECK_THAT(vm, Catch::Contains(o));
  }
  std::string criu = kernel_fragment(KernelMode::criu);
  for (const char* o : {"CONFIG_CHECKPOINT_RESTORE=y", "CONFIG_MEMBARRIER=y", "CONFIG_PROC_PAGE_MONITOR=y",
                        "CONFIG_EXPERT=y", "CONFIG_TIME_NS=y", "CONFIG_UNIX_DIAG=y", "CONFIG_PID_NS=y"}) {
    CHECK_THAT(criu, Catch::Contains(o));
  }
}
