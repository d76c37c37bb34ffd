#include "tests/support/fake_qmp.hpp"

#include "util/unix_socket.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <unistd.h>

namespace ks::test {

FakeQmpServer::FakeQmpServer(const std::string& path, Script script) : m_listen(listen_unix(path)) {
  m_thread = std::thread([this, script = std::move(script)] {
    Fd client(::accept4(m_listen.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (client) {
      script(*this, client.get());
    }
  });
}

FakeQmpServer::~FakeQmpServer() {
  ::shutdown(m_listen.get(), SHUT_RDWR);
  m_thread.join();
}

void FakeQmpServer::send_line(int client, const std::string& line) {
  std::string data = line + "\r\n";
  (void)::send(client, data.data(), data.size(), MSG_NOSIGNAL);
}

std::string FakeQmpServer::read_line(int client) {
  for (;;) {
    auto nl = m_buf.find('\n');
    if (nl != std::string::npos) {
      std::string line = m_buf.substr(0, nl);
      m_buf.erase(0, nl + 1);
      return line;
    }
    char buf[4096];
    ssize_t n = ::recv(client, buf, sizeof buf, 0);
    if (n <= 0) {
      return {};
    }
    m_buf.append(buf, static_cast<size_t>(n));
  }
}

const char* FakeQmpServer::greeting() {
  return R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 10}, "package": "fake"}, "capabilities": []}})";
}

FakeQmpServer::Script FakeQmpServer::after_handshake(Script rest) {
  return [rest = std::move(rest)](FakeQmpServer& s, int c) {
    send_line(c, greeting());
    nlohmann::json request = nlohmann::json::parse(s.read_line(c));
    send_line(c, nlohmann::json{{"return", nlohmann::json::object()}, {"id", request["id"]}}.dump());
    rest(s, c);
  };
}

TempDir::TempDir() {

  std::string tmpl = std::filesystem::temp_directory_path().string() + "/ksnap-test-XXXXXX";
  if (!::mkdtemp(tmpl.data())) {
    throw std::runtime_error("mkdtemp failed");
  }
  m_path = tmpl;
}

TempDir::~TempDir() {
  if (std::getenv("KSNAP_KEEP_TEST_DIRS")) {
    std::fprintf(stderr, "kept test directory %s\n", m_path.c_str());
    return;
  }
  std::error_code ec;

  std::filesystem::remove_all(m_path, ec);
}

} // namespace ks::test
