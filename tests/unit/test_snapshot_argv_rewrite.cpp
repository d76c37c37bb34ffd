// Rewriting a recorded QEMU command line for a restore, with Kata's argv shapes.
#include "snapshot/argv_rewrite.hpp"
#include "util/error.hpp"

#include <catch2/catch.hpp>
#include <unistd.h>

using namespace ks;

namespace {

std::vector<std::string> kata_argv(std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"/usr/bin/qemu-system-x86_64",
                                "-name",
                                "sandbox-abc",
                                "-machine",
                                "q35,accel=kvm,nvdimm=on",
                                "-qmp",
                                "unix:fd=3,server=on,wait=off",
                                "-m",
                                "2048M,slots=10,maxmem=8G",
                                "-device",
                                "virtio-serial-pci,disable-modern=false,id=serial0",
                                "-device",
                                "virtconsole,chardev=charconsole0,id=console0",
                                "-chardev",
                                "socket,id=charconsole0,path=/run/vc/vm/abc/console.sock,server=on,wait=off",
                                "-chardev",
                                "socket,id=char-vfs,path=/run/vc/vm/abc/vhost-fs.sock",
                                "-device",
                                "vhost-user-fs-pci,chardev=char-vfs,tag=kataShared",
                                "-pidfile",
                                "/run/vc/vm/abc/pid",
                                "-daemonize"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

} // namespace

TEST_CASE("rewrite: Kata's QMP fd, pid file and daemonize are replaced, server sockets move") {
  RewriteResult r = rewrite_for_restore(
    QemuArgv(kata_argv()),
    {"/run/new", "/run/new/qmp.sock", {{"char-vfs", "/run/new/vhost-fs-kataShared.sock"}}});
  std::vector<std::string> argv = r.argv.to_argv();
  std::string joined;
  for (const auto& a : argv) {
    joined += a + " ";
  }
  CHECK(joined.find("fd=3") == std::string::npos);
  CHECK(joined.find("-daemonize") == std::string::npos);
  CHECK(joined.find("/run/vc/vm/abc/pid") == std::string::npos);
  CHECK(joined.find("-qmp unix:/run/new/qmp.sock,server=on,wait=off") != std::string::npos);
  CHECK(joined.find("-pidfile /run/new/qemu.pid -S -incoming defer") != std::string::npos);
  CHECK(r.sockets.at("charconsole0") == "/run/new/charconsole0.sock");
  CHECK(r.sockets.at("char-vfs") == "/run/new/vhost-fs-kataShared.sock");
  CHECK(joined.find("-machine q35,accel=kvm,nvdimm=on") != std::string::npos);
}

TEST_CASE("rewrite: the recorded machine type is pinned and --sandbox renames the guest") {
  auto rewritten = [](std::vector<std::string> extra, const std::string& machine, const std::string& name) {
    RewriteOptions ro{"/run/new", "/run/new/qmp.sock", {}, {}, false, machine, name};
    std::string joined;
    for (const auto& a : rewrite_for_restore(QemuArgv(kata_argv(std::move(extra))), ro).argv.to_argv()) {
      joined += a + " ";
    }
    return joined;
  };
  std::string pinned = rewritten({}, "pc-q35-10.0", "");
  CHECK_THAT(pinned, Catch::Contains("-machine pc-q35-10.0,accel=kvm,nvdimm=on ") &&
                       Catch::Contains("-name sandbox-abc "));
  // type= spelled out, and -M: the same pinning.
  std::string typed = rewritten({"-M", "type=q35,smm=off"}, "pc-q35-10.0", "");
  CHECK_THAT(typed, Catch::Contains("-machine pc-q35-10.0,smm=off "));
  std::string renamed = rewritten({"-name", "guest=old,debug-threads=on"}, "", "sandbox-new");
  CHECK_THAT(renamed, Catch::Contains("-name sandbox-new,debug-threads=on ") &&
                        Catch::Contains("-name sandbox-new ") &&
                        Catch::Contains("-machine q35,accel=kvm,nvdimm=on "));
}

TEST_CASE("rewrite: a re-created tap's new fds replace fds= and vhostfds=, vhost kept only where available") {

  auto argv = kata_argv({"-netdev", "tap,id=network-0,vhost=on,vhostfds=4:5,fds=6:7", "-device",
                         "driver=virtio-net-pci,netdev=network-0,mac=d6:96:23:1b:02:05,mq=on,vectors=6"});
  for (bool vhost_net : {true, false}) {
    RewriteOptions ro{"/run/new", "/run/new/qmp.sock", {}, {{"network-0", {3, 4}}}, vhost_net};
    RewriteResult r = rewrite_for_restore(QemuArgv(argv), ro);
    auto netdevs = r.argv.all("netdev");
    REQUIRE(netdevs.size() == 1);
    CHECK(netdevs[0].str() == std::string("tap,id=network-0,fds=3:4,vhost=") + (vhost_net ? "on" : "off"));
    CHECK(r.warnings.size() == (vhost_net ? 0u : 1u));
    CHECK(r.argv.all("device").back().str() ==
          "driver=virtio-net-pci,netdev=network-0,mac=d6:96:23:1b:02:05,mq=on,vectors=6");
  }
}

TEST_CASE("rewrite: taps passed as inherited fds are refused with the reason") {

  auto argv = kata_argv({"-netdev", "tap,id=network-0,vhost=on,vhostfds=4,fds=5", "-device",
                         "driver=virtio-net-pci,netdev=network-0,mac=d6:96:23:1b:02:05"});
  try {
    rewrite_for_restore(QemuArgv(argv), {"/run/new", "/run/new/qmp.sock", {}});
    FAIL("accepted an inherited tap fd");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::archive_invalid);
    CHECK_THAT(e.what(),
               Catch::Contains("-netdev tap,id=network-0") && Catch::Contains("passes a file descriptor"));
  }
}

TEST_CASE("rewrite: vhost-vsock's inherited fd is dropped, or refused without /dev/vhost-vsock") {
  auto argv = kata_argv({"-device", "vhost-vsock-pci,disable-modern=false,vhostfd=3,id=vsock-1,guest-cid=7"});
  if (::access("/dev/vhost-vsock", R_OK | W_OK) == 0) {
    RewriteResult r = rewrite_for_restore(QemuArgv(argv), {"/run/new", "/run/new/qmp.sock", {}});
    auto devices = r.argv.all("device");
    CHECK(devices.back().str() == "vhost-vsock-pci,disable-modern=false,id=vsock-1,guest-cid=7");
  } else {
    CHECK_THROWS_WITH(rewrite_for_restore(QemuArgv(argv), {"/run/new", "/run/new/qmp.sock", {}}),
                      Catch::Contains("no usable /dev/vhost-vsock"));
  }
}
