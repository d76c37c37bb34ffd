// The QMP client against a scripted fake server: the malformed and hostile cases.
#include "qmp/qmp_client.hpp"
#include "tests/support/fake_qmp.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sys/socket.h>

using ks::Error;
using ks::Millis;
using ks::qmp::Client;
using ks::qmp::CommandError;
using ks::test::FakeQmpServer;
using ks::test::TempDir;
using Json = nlohmann::json;

TEST_CASE("qmp: command result and events received while waiting") {
  TempDir dir;
  FakeQmpServer server(
    dir / "qmp.sock", FakeQmpServer::after_handshake([](FakeQmpServer& s, int c) {
      Json req = Json::parse(s.read_line(c));
      FakeQmpServer::send_line(
        c, R"({"event": "STOP", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}})");
      FakeQmpServer::send_line(c, Json{{"return", {{"status", "paused"}}}, {"id", req["id"]}}.dump());
      s.read_line(c);
    }));
  Client qmp = Client::connect(dir / "qmp.sock");
  CHECK(qmp.greeting()["version"]["qemu"]["major"] == 10);
  Json r = qmp.execute("query-status");
  CHECK(r["status"] == "paused");
  auto ev = qmp.wait_event("STOP", nullptr, Millis(10));
  REQUIRE(ev);
  CHECK(ev->name == "STOP");
}

TEST_CASE("qmp: an error reply carries QEMU's class and description") {
  TempDir dir;
  FakeQmpServer server(
    dir / "qmp.sock", FakeQmpServer::after_handshake([](FakeQmpServer& s, int c) {
      Json req = Json::parse(s.read_line(c));
      FakeQmpServer::send_line(
        c, Json{{"error", {{"class", "DeviceNotFound"}, {"desc", "Device 'x' not found"}}}, {"id", req["id"]}}
             .dump());
      s.read_line(c);
    }));
  Client qmp = Client::connect(dir / "qmp.sock");
  try {
    qmp.execute("device_del", {{"id", "x"}});
    FAIL("no exception");
  } catch (const CommandError& e) {
    CHECK(e.error_class() == "DeviceNotFound");
    CHECK(e.desc() == "Device 'x' not found");
    CHECK(std::string(e.what()) == "QEMU refused device_del: Device 'x' not found");
  }
}

TEST_CASE("qmp: a socket that never greets is reported as held by another client") {
  TempDir dir;
  FakeQmpServer server(dir / "qmp.sock", [](FakeQmpServer& s, int c) { s.read_line(c); });
  try {
    Client::connect(dir / "qmp.sock", Millis(300));
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("held by another client"));
    CHECK_THAT(e.hint(), Catch::Contains("extra_monitor_socket"));
  }
}

TEST_CASE("qmp: a peer that does not speak QMP") {
  TempDir dir;
  FakeQmpServer server(dir / "qmp.sock", [](FakeQmpServer& s, int c) {
    FakeQmpServer::send_line(c, R"({"hello": "world"})");
    s.read_line(c);
  });
  CHECK_THROWS_WITH(Client::connect(dir / "qmp.sock"), Catch::Contains("does not speak QMP"));
}

TEST_CASE("qmp: an event the previous client left unread, ahead of the greeting, is skipped") {
  TempDir dir;
  FakeQmpServer server(dir / "qmp.sock", [](FakeQmpServer& s, int c) {
    FakeQmpServer::send_line(c, R"({"event": "VSERPORT_CHANGE", "data": {"id": "helper0", "open": true}, )"
                                R"("timestamp": {"seconds": 1, "microseconds": 0}})");
    FakeQmpServer::after_handshake([](FakeQmpServer& self, int client) { self.read_line(client); })(s, c);
  });
  Client qmp = Client::connect(dir / "qmp.sock");
  CHECK(qmp.greeting().contains("version"));
}

TEST_CASE("qmp: a garbled line") {

  TempDir dir;
  FakeQmpServer server(dir / "qmp.sock", FakeQmpServer::after_handshake([](FakeQmpServer& s, int c) {
                         s.read_line(c);
                         FakeQmpServer::send_line(c, "{\"return\": {\"status\": ");
                         s.read_line(c);
                       }));
  Client qmp = Client::connect(dir / "qmp.sock");
  CHECK_THROWS_WITH(qmp.execute("query-status"), Catch::Contains("garbled QMP message"));
}

TEST_CASE("qmp: an oversized line") {
  TempDir dir;
  FakeQmpServer server(dir / "qmp.sock", FakeQmpServer::after_handshake([](FakeQmpServer& s, int c) {
                         s.read_line(c);
                         std::string big(Client::k_max_line + 1024, 'x');
                         (void)::send(c, big.data(), big.size(), MSG_NOSIGNAL);
                         s.read_line(c);
                       }));
  Client qmp = Client::connect(dir / "qmp.sock");
  CHECK_THROWS_WITH(qmp.execute("query-status"), Catch::Contains("larger than 16 MiB"));
}

TEST_CASE("qmp: the server closes the connection mid-command") {
  TempDir dir;
  FakeQmpServer server(dir / "qmp.sock",
                       FakeQmpServer::after_handshake([](FakeQmpServer& s, int c) { s.read_line(c); }));
  Client qmp = Client::connect(dir / "qmp.sock");
  CHECK_THROWS_WITH(qmp.execute("query-status"), Catch::Contains("closed by QEMU"));
}

TEST_CASE("qmp: a command that gets no answer hits its deadline") {
  TempDir dir;
  FakeQmpServer server(dir / "qmp.sock", FakeQmpServer::after_handshake([](FakeQmpServer& s, int c) {
                         s.read_line(c);
                         s.read_line(c);
                       }));
  Client qmp = Client::connect(dir / "qmp.sock");
  CHECK_THROWS_WITH(qmp.execute("query-status", Json::object(), Millis(200)),
                    Catch::Contains("did not answer query-status within 200 ms"));
}

TEST_CASE("qmp: a socket path that does not exist") {
  TempDir dir;
  CHECK_THROWS_WITH(Client::connect(dir / "missing.sock", Millis(100)),
                    Catch::Contains("failed to connect to") && Catch::Contains("No such file"));
}
