// A small HTTP/1.1 server on 127.0.0.1, for the registry client's fault cases that a real
// registry cannot be made to produce on demand (an upload location on another server, a tag
// list that never ends). One thread; each connection carries one request, which a handler
// answers before the connection is closed.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ks::test {

class FakeHttp {
public:
  struct Request {
    std::string method, target;
    std::vector<std::string> headers;               // "Name: value", as sent
    bool has_header(const std::string& name) const; // case-insensitive
  };
  // Returns the whole response; reply() builds one.
  using Handler = std::function<std::string(const Request&)>;

  explicit FakeHttp(Handler handler);
  ~FakeHttp();
  FakeHttp(const FakeHttp&) = delete;
  FakeHttp& operator=(const FakeHttp&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(m_port); }
  std::string host() const { return "127.0.0.1:" + std::to_string(m_port); }
  std::vector<Request> requests() const; // every one so far

  static std::string reply(int status, const std::vector<std::string>& headers = {},
                           const std::string& body = "");

private:
  void serve();
  void answer(int fd);

  Handler m_handler;
  int m_listener = -1;
  int m_port = 0;
  bool m_stop = false; // under m_mutex
  mutable std::mutex m_mutex;
  std::vector<Request> m_requests;
  std::thread m_thread;
};

} // namespace ks::test
