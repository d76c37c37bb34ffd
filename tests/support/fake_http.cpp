#include "tests/support/fake_http.hpp"

#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/strings.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace ks::test {

bool FakeHttp::Request::has_header(const std::string& name) const {
  for (const auto& h : headers) {
    if (lowercase(h).starts_with(lowercase(name) + ":")) {
      return true;
    }
  }
  return false;
}

FakeHttp::FakeHttp(Handler handler) : m_handler(std::move(handler)) {
  m_listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (m_listener < 0 || ::bind(m_listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(m_listener, 16) != 0 ||
      ::getsockname(m_listener, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    throw_errno("the fake HTTP server cannot listen on 127.0.0.1");
  }
  m_port = ntohs(a.sin_port);
  m_thread = std::thread([this] { serve(); });
}

FakeHttp::~FakeHttp() {
  {
    std::lock_guard lock(m_mutex);
    m_stop = true;
  }
  m_thread.join();
  ::close(m_listener);
}

std::vector<FakeHttp::Request> FakeHttp::requests() const {
  std::lock_guard lock(m_mutex);
  return m_requests;
}

std::string FakeHttp::reply(int status, const std::vector<std::string>& headers, const std::string& body) {
  std::string r = "HTTP/1.1 " + std::to_string(status) +
                  " Fake\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n";
  for (const auto& h : headers) {
    r += h + "\r\n";
  }
  return r + "\r\n" + body;
}

void FakeHttp::serve() {
  for (;;) {
    {
      std::lock_guard lock(m_mutex);
      if (m_stop) {
        return;
      }
    }
    pollfd p{m_listener, POLLIN, 0};
    if (::poll(&p, 1, 50) != 1) {
      continue;
    }
    Fd c(::accept4(m_listener, nullptr, nullptr, SOCK_CLOEXEC));
    if (c) {
      try {
        answer(c.get());
      } catch (const std::exception&) {
      } // the client sees the connection close
    }
  }
}

void FakeHttp::answer(int fd) {
  std::string in;
  char buf[4096];
  size_t head_end = std::string::npos;
  while (head_end == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) {
      return;
    }
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0 || (in.empty() && !(buf[0] >= 'A' && buf[0] <= 'Z'))) {
      return; // closed, or not HTTP (a TLS handshake): closing it fails the client's attempt
    }
    in.append(buf, static_cast<size_t>(n));
    head_end = in.find("\r\n\r\n");
  }
  Request r;
  auto lines = split(in.substr(0, head_end), '\n');
  auto first = split(trim(lines.at(0)), ' ');
  r.method = first.at(0);
  r.target = first.at(1);
  uint64_t length = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::string h = trim(lines[i]);
    r.headers.push_back(h);
    if (lowercase(h).starts_with("content-length:")) {
      length = std::stoull(trim(h.substr(15)));
    }
  }
  for (uint64_t have = in.size() - head_end - 4; have < length;) { // the body: read and dropped
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      return;
    }
    have += static_cast<uint64_t>(n);
  }
  {
    std::lock_guard lock(m_mutex);
    m_requests.push_back(r);
  }
  write_all(fd, m_handler(r), "fake HTTP reply");
}

} // namespace ks::test
