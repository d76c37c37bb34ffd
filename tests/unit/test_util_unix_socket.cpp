// Who can connect to a QMP socket: its mode and every directory above it decide.
#include "tests/support/fake_qmp.hpp"
#include "util/unix_socket.hpp"

#include <catch2/catch.hpp>
#include <sys/stat.h>
#include <unistd.h>

using namespace ks;
using namespace ks::test;

TEST_CASE("socket_exposure: the socket's mode and the directories above it") {
  TempDir dir;
  std::string sock = dir / "qmp.sock";
  Fd listening = listen_unix(sock);
  ::chmod(dir.path().c_str(), 0700);
  ::chmod(sock.c_str(), 0777);
  CHECK(socket_exposure(sock).empty()); // nobody else can enter the directory
  ::chmod(dir.path().c_str(), 0755);
  CHECK(socket_exposure(sock) == "every user");
  ::chmod(sock.c_str(), 0755);
  CHECK(socket_exposure(sock).empty()); // connecting needs write permission
  if (::chown(sock.c_str(), static_cast<uid_t>(-1), 100) == 0) {
    ::chmod(sock.c_str(), 0770);
    CHECK_THAT(socket_exposure(sock), Catch::StartsWith("the members of group "));
  }
  CHECK(socket_exposure(dir / "missing").empty());
}
