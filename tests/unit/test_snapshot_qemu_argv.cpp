#include "snapshot/qemu_argv.hpp"
#include "snapshot/vm.hpp"

#include <catch2/catch.hpp>

using ks::OptionValue;
using ks::QemuArgv;

TEST_CASE("argv: option values with escaped commas round-trip") {
  OptionValue v = OptionValue::parse("socket,id=c0,path=/run/a,,b.sock,server=on");
  CHECK(v.get("") == "socket");
  CHECK(v.get("path") == "/run/a,b.sock");
  CHECK(v.str() == "socket,id=c0,path=/run/a,,b.sock,server=on");
  v.set("path", "/x");
  v.erase("server");
  CHECK(v.str() == "socket,id=c0,path=/x");
}

TEST_CASE("argv: flags and valued options are kept in order") {
  QemuArgv a({"qemu-system-x86_64", "-S", "-m", "256M", "-nodefaults", "-name", "sandbox-x"});
  REQUIRE(a.options().size() == 4);
  CHECK(a.first("m") == "256M");
  CHECK(a.to_argv() == std::vector<std::string>{"qemu-system-x86_64", "-S", "-m", "256M", "-nodefaults",
                                                "-name", "sandbox-x"});
}

TEST_CASE("argv: the helper's host socket is found through its chardev") {
  QemuArgv a({"qemu", "-chardev", "socket,id=h,path=/tmp/h.sock,server=on,wait=off", "-device",
              "virtserialport,chardev=h,name=org.kata-snapshot.helper.0"});
  CHECK(ks::helper_socket_path(a) == "/tmp/h.sock");
  QemuArgv none({"qemu", "-m", "1G"});
  CHECK_FALSE(ks::helper_socket_path(none));
}
