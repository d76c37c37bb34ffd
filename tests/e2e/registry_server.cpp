#include "tests/e2e/registry_server.hpp"

#include "tests/e2e/guest_vm.hpp"
#include "tests/support/fake_http.hpp"
#include "util/crypto.hpp"
#include "util/deadline.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <csignal>
#include <ctime>
#include <fcntl.h>
#include <filesystem>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace fs = std::filesystem;

namespace ks::test {

namespace {

void write_text(const std::string& path, const std::string& text) {
  Fd f = open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  write_all(f.get(), text, path);
}

void must(const std::vector<std::string>& argv) {
  CommandResult r = run_command(argv);
  if (r.status != 0) {
    throw Error(argv[0] + " failed: " + r.error_output);
  }
}

bool have(const std::string& program) {
  return run_command({"sh", "-c", "command -v " + program}).status == 0;
}

// A listening TCP socket on 127.0.0.1 and an ephemeral port.
Fd listen_tcp(int* port) {
  Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (!s || ::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s.get(), 16) != 0 ||
      ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    throw_errno("cannot listen on 127.0.0.1");
  }
  *port = ntohs(a.sin_port);
  return s;
}

bool answers(int port) {
  Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  return ::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

std::string base64url(const std::string& bytes) {
  std::string b = base64(std::span(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()));
  for (char& c : b) {
    c = c == '+' ? '-' : c == '/' ? '_' : c;
  }
  return b.substr(0, b.find('='));
}

std::string query_value(const std::string& target, const std::string& key) {
  auto at = target.find(key + "=");
  if (at == std::string::npos) {
    return "";
  }
  std::string v = target.substr(at + key.size() + 1);
  v = v.substr(0, v.find('&'));
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '%' && i + 2 < v.size()) {
      out += static_cast<char>(std::stoi(v.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += v[i];
    }
  }
  return out;
}

} // namespace

// The registry's token service: GET /token?service=S&scope=repository:NAME:ACTIONS with
// basic credentials answers a JWT granting exactly that scope; anything else is a 401.
class TokenService {
public:
  TokenService(std::string dir)
    : m_dir(std::move(dir)), m_http([this](const FakeHttp::Request& r) { return answer(r); }) {
    must({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", m_dir + "/token.key", "-out",
          m_dir + "/token.crt", "-days", "2", "-subj", "/CN=ksnap-token"});
    must({"openssl", "x509", "-in", m_dir + "/token.crt", "-outform", "DER", "-out", m_dir + "/token.der"});
  }
  std::string realm() const { return m_http.url() + "/token"; }
  std::string cert() const { return m_dir + "/token.crt"; }

private:
  std::string answer(const FakeHttp::Request& r) {
    std::string pair = std::string(TestRegistry::k_user) + ":" + TestRegistry::k_password;
    std::string basic = "Authorization: Basic " +
                        base64(std::span(reinterpret_cast<const unsigned char*>(pair.data()), pair.size()));
    if (std::find(r.headers.begin(), r.headers.end(), basic) == r.headers.end()) {
      return FakeHttp::reply(401);
    }
    std::string body = nlohmann::json{{"token", token(query_value(r.target, "scope"))}}.dump();
    return FakeHttp::reply(200, {"Content-Type: application/json"}, body);
  }

  std::string token(const std::string& scope) {
    std::string der = read_file(m_dir + "/token.der");
    nlohmann::json header = {
      {"typ", "JWT"},
      {"alg", "RS256"},
      {"x5c", {base64(std::span(reinterpret_cast<const unsigned char*>(der.data()), der.size()))}}};
    nlohmann::json access = nlohmann::json::array();
    if (auto first = scope.find(':'), last = scope.rfind(':'); first != std::string::npos && last > first) {
      nlohmann::json actions = nlohmann::json::array();
      std::string list = scope.substr(last + 1);
      for (size_t at = 0; at <= list.size();) {
        size_t comma = list.find(',', at);
        actions.push_back(list.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
        at = comma == std::string::npos ? list.size() + 1 : comma + 1;
      }
      access.push_back({{"type", scope.substr(0, first)},
                        {"name", scope.substr(first + 1, last - first - 1)},
                        {"actions", actions}});
    }
    long now = static_cast<long>(std::time(nullptr));
    nlohmann::json claims = {{"iss", "ksnap-test-issuer"},
                             {"sub", TestRegistry::k_user},
                             {"aud", "ksnap-test"},
                             {"exp", now + 600},
                             {"nbf", now - 10},
                             {"iat", now},
                             {"jti", std::to_string(++m_issued)},
                             {"access", access}};
    std::string input = base64url(header.dump()) + "." + base64url(claims.dump());
    std::string in = m_dir + "/token.in";
    write_text(in, input);
    must({"openssl", "dgst", "-sha256", "-sign", m_dir + "/token.key", "-out", m_dir + "/token.sig", in});
    return input + "." + base64url(read_file(m_dir + "/token.sig"));
  }

  std::string m_dir;
  std::atomic<int> m_issued{0};
  FakeHttp m_http; // last: it answers from its own thread until it is gone
};

TestRegistry::TestRegistry(std::string dir, RegistrySetup setup) : m_dir(std::move(dir)), m_setup(setup) {
  std::vector<std::string> programs = {"docker-registry", "htpasswd", "openssl"};
  if (m_setup.redirect) {
    programs.emplace_back("busybox");
  }
  for (const auto& program : programs) {
    if (!have(program)) {
      skip(program + " is not installed (run `make test`, which installs it)");
    }
  }
  fs::create_directories(m_dir + "/data");
  { Fd port_holder = listen_tcp(&m_port); } // a free port, released for the registry
  if (m_setup.redirect) {
    Fd port_holder = listen_tcp(&m_storage_port);
  }
  if (m_setup.tls) {
    m_cert_dir = m_dir + "/certs";
    fs::create_directories(m_cert_dir);
    must({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", m_dir + "/ca.key", "-out",
          m_cert_dir + "/ca.crt", "-days", "2", "-subj", "/CN=ksnap-test-ca"});
    must({"openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", m_dir + "/server.key", "-out",
          m_dir + "/server.csr", "-subj", "/CN=127.0.0.1"});
    write_text(m_dir + "/san.ext", "subjectAltName=IP:127.0.0.1\n");
    must({"openssl", "x509", "-req", "-in", m_dir + "/server.csr", "-CA", m_cert_dir + "/ca.crt", "-CAkey",
          m_dir + "/ca.key", "-CAcreateserial", "-out", m_dir + "/server.crt", "-days", "2", "-extfile",
          m_dir + "/san.ext"});
  }
  if (m_setup.auth == RegistryAuth::basic) {
    must({"htpasswd", "-Bbc", m_dir + "/htpasswd", k_user, k_password});
  }
  if (m_setup.auth == RegistryAuth::bearer) {
    m_tokens = std::make_unique<TokenService>(m_dir);
  }
  write_config();
  start();
}

TestRegistry::~TestRegistry() {
  stop();
}

void TestRegistry::write_config() {
  std::string c = "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
                  "storage:\n  filesystem:\n    rootdirectory: " +
                  m_dir + "/data\n  delete:\n    enabled: " + (m_setup.deletion ? "true" : "false") +
                  "\nhttp:\n  addr: 127.0.0.1:" + std::to_string(m_port) + "\n";
  if (m_setup.tls) {
    c += "  tls:\n    certificate: " + m_dir + "/server.crt\n    key: " + m_dir + "/server.key\n";
  }
  if (m_setup.auth == RegistryAuth::basic) {
    c += "auth:\n  htpasswd:\n    realm: ksnap-test\n    path: " + m_dir + "/htpasswd\n";
  }
  if (m_setup.auth == RegistryAuth::bearer) {
    c += "auth:\n  token:\n    realm: " + m_tokens->realm() +
         "\n    service: ksnap-test\n    issuer: ksnap-test-issuer\n    rootcertbundle: " + m_tokens->cert() +
         "\n";
  }
  // Last: the blocks above extend `http:` (tls) and add top-level keys; this one is top-level too.
  if (m_setup.redirect) { // distribution 2.8 keeps the base URL's scheme and host, and the path
    c += "middleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: http://127.0.0.1:" +
         std::to_string(m_storage_port) + "/\n";
  }
  write_text(m_dir + "/config.yml", c);
}

void TestRegistry::start() {
  if (m_setup.redirect) { // the storage as its files: what the registry's 307s point at
    SpawnOptions storage;
    storage.argv = {"busybox", "httpd",        "-f", "-p", "127.0.0.1:" + std::to_string(m_storage_port),
                    "-h",      m_dir + "/data"};
    storage.stderr_path = m_dir + "/storage.log";
    storage.stdout_path = m_dir + "/storage.log";
    m_storage = ChildProcess::spawn(storage);
  }
  SpawnOptions so;
  so.argv = {"docker-registry", "serve", m_dir + "/config.yml"};
  so.stderr_path = m_dir + "/registry.log";
  so.stdout_path = m_dir + "/registry.log";
  m_process = ChildProcess::spawn(so);
  Deadline deadline(Millis(20000));
  while (!answers(m_port) || (m_setup.redirect && !answers(m_storage_port))) {
    if (deadline.expired()) {
      throw Error("docker-registry (or its storage server) did not start: " + log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void TestRegistry::stop() {
  for (ChildProcess* p : {&m_process, &m_storage}) {
    if (p->pid() > 0) {
      ::kill(p->pid(), SIGKILL);
      p->wait(Deadline(Millis(10000)));
    }
  }
}

std::string TestRegistry::ref(const std::string& repo_tag) const {
  return "docker://127.0.0.1:" + std::to_string(m_port) + "/" + repo_tag;
}

std::vector<std::string> TestRegistry::flags(const std::string& prefix) const {
  std::vector<std::string> f;
  if (m_setup.tls) {
    f = {"--" + prefix + "cert-dir", m_cert_dir};
  } else {
    f = {"--" + prefix + "tls-verify=false"};
  }
  if (m_setup.auth != RegistryAuth::none) {
    f.push_back("--" + prefix + "creds");
    f.push_back(std::string(k_user) + ":" + k_password);
  }
  return f;
}

size_t TestRegistry::blob_count() const {
  std::string root = m_dir + "/data/docker/registry/v2/blobs/sha256";
  size_t n = 0;
  if (fs::exists(root)) {
    for (const auto& e : fs::recursive_directory_iterator(root)) {
      n += e.is_regular_file() && e.path().filename() == "data";
    }
  }
  return n;
}

std::string TestRegistry::blob_path(const std::string& digest) const {
  std::string hex = digest.substr(7);
  return m_dir + "/data/docker/registry/v2/blobs/sha256/" + hex.substr(0, 2) + "/" + hex + "/data";
}

std::string TestRegistry::log() const {
  std::string text = fs::exists(m_dir + "/registry.log") ? read_file(m_dir + "/registry.log") : "";
  return text.size() > 4000 ? text.substr(text.size() - 4000) : text;
}

size_t TestRegistry::redirects() const {
  std::string text = fs::exists(m_dir + "/registry.log") ? read_file(m_dir + "/registry.log") : "";
  size_t n = 0;
  for (size_t at = 0; (at = text.find("\" 307 ", at)) != std::string::npos; ++at) {
    ++n;
  }
  return n;
}

std::vector<std::string> with(std::vector<std::string> argv, const std::vector<std::string>& flags) {
  argv.insert(argv.end(), flags.begin(), flags.end());
  return argv;
}

} // namespace ks::test
