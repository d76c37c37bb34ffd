// Devices added after boot over QMP, as the Kata runtime adds them: a virtio-blk disk with a
// file system, a pc-dimm and a vCPU. After save, kill and load the guest still has them.
#include "tests/e2e/snapshot_steps.hpp"
#include "util/fd.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <regex>

using namespace ks;
using namespace ks::test;
using Json = nlohmann::json;

namespace {

struct Seen {
  long n = -1;
  std::string what; // "cpus=2 mem=... disk=..."
};

Seen last_devices(const std::string& text) {
  static const std::regex re(R"(ksnap: devices (\d+) (cpus=\d+ mem=\d+ disk=\S+))");
  Seen s;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) {
    s = {std::stol((*it)[1]), (*it)[2]};
  }
  return s;
}

void hot_plug(qmp::Client& qmp, const std::string& image) {
  qmp.execute(
    "blockdev-add",
    {{"driver", "raw"}, {"node-name", "disk1"}, {"file", {{"driver", "file"}, {"filename", image}}}});
  qmp.execute("device_add",
              {{"driver", "virtio-blk-pci"}, {"id", "blk1"}, {"drive", "disk1"}, {"bus", "rp1"}});
  qmp.execute("object-add", {{"qom-type", "memory-backend-ram"}, {"id", "mem1"}, {"size", 128 << 20}});
  qmp.execute("device_add", {{"driver", "pc-dimm"}, {"id", "dimm1"}, {"memdev", "mem1"}});
  for (const auto& cpu : qmp.execute("query-hotpluggable-cpus")) {
    if (!cpu.contains("qom-path")) {
      Json args = cpu["props"];
      args.erase("node-id");
      args["driver"] = cpu["type"];
      args["id"] = "cpu1";
      qmp.execute("device_add", args);
      return;
    }
  }
  FAIL("no free vCPU slot");
}

} // namespace

TEST_CASE("devices added after boot (disk, memory, vCPU) are there after save, kill, load") {
  GuestVm vm({.workload = "devices",
              .extra_qemu_args = {"-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1"}});
  TempDir files;
  std::filesystem::create_directories(files / "fs");
  std::ofstream(files / "fs/hello.txt") << "hello-from-the-disk\n";
  std::string image = vm.dir() + "/data.img";
  REQUIRE(run_command({"mkfs.ext4", "-q", "-F", "-d", files / "fs", image, "16M"}).status == 0);
  Seen boot = last_devices(vm.wait_console("ksnap: devices 1 "));
  {
    qmp::Client qmp = vm.qmp();
    hot_plug(qmp, image);
  }
  vm.wait_console("disk=hello-from-the-disk", Millis(120000));
  vm.wait_console("cpus=2", Millis(120000));
  std::string archive = vm.dir() + "/vm.ksnap";
  save_paused(vm.qmp_path(), archive);
  Seen before = last_devices(vm.console());
  INFO("at boot: " << boot.what << "; at save: " << before.what);
  CHECK(before.what.find("cpus=2") != std::string::npos);
  CHECK(before.what != boot.what);
  Json manifest = Json::parse(run_cli({"inspect", archive, "--json"}).output);
  std::string added = manifest["devices_added"].dump();
  for (const char* expect : {"blockdev-add", "\"blk1\"", "\"rp1\"", "object-add", "\"dimm1\"", "\"cpu1\""}) {
    CHECK(added.find(expect) != std::string::npos);
  }
  size_t offset = vm.console().size();
  vm.kill();
  RestoredVm restored = load_ok(archive, vm.dir() + "/run");
  vm.wait_console("ksnap: devices " + std::to_string(before.n + 3) + " ", Millis(60000), offset);
  Seen after = last_devices(vm.console().substr(offset));
  CHECK(after.what == before.what); // same CPUs, same memory, same disk and file system
  CHECK(vm.console().substr(offset).find("ksnap: boot") == std::string::npos);
}
