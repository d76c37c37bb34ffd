// End-to-end tests run real QEMU guests; the reaper kills detached QEMUs on any exit.
#define CATCH_CONFIG_RUNNER
#define CATCH_CONFIG_NO_POSIX_SIGNALS
#include "tests/e2e/guest_vm.hpp"

#include <catch2/catch.hpp>

int main(int argc, char** argv) {
  ks::test::install_reaper();
  return Catch::Session().run(argc, argv);
}
