// A small HTTP client over libcurl (the only user of curl.h): one request at a time on a
// kept-alive connection, TLS against the system CAs plus a private directory of them, and
// transport failures told apart (unreachable, TLS not trusted, reset or timed out), so that
// callers can retry what is worth retrying and name what is not.
#pragma once

#include "util/error.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace ks {

struct TlsOptions {
  bool verify = true;   // --tls-verify=false turns certificate and host checks off
  std::string cert_dir; // --cert-dir: *.crt are extra CAs; NAME.cert with NAME.key a client certificate
};

// A request failed below HTTP: no connection, no trusted TLS, a reset or a timeout.
class TransportError : public Error {
public:
  enum class Kind { unreachable, untrusted, interrupted };
  TransportError(Kind kind, const std::string& what) : Error(what), m_kind(kind) {}
  Kind kind() const { return m_kind; }

private:
  Kind m_kind;
};

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers; // "Name: value"
  std::span<const std::byte> body;  // sent as is (PUT, PATCH, POST)
  uint64_t max_body = 1u << 20;     // a larger response body is an error (without on_data)
  // Streams the response body here instead (only on a 2xx answer); false aborts.
  std::function<bool(std::span<const std::byte>)> on_data;
  std::chrono::seconds timeout{0}; // the whole transfer; 0: none, only the stall timeout
};

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers; // names lowercased; a repeated header: its last value
  std::string body;                           // unless streamed
  std::string effective_url;                  // after redirects
  std::string header(const std::string& lowercase_name) const;
};

class HttpClient {
public:
  explicit HttpClient(TlsOptions tls);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends R and returns the answer, whatever its status. Throws TransportError.
  HttpResponse perform(const HttpRequest& r);

private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

// Resolves REF (absolute, or relative as in a Location header) against BASE.
std::string resolve_url(const std::string& base, const std::string& ref);

// URL's origin as "scheme://host[:port]": scheme and host lowercased, user info and the
// scheme's default port dropped; "" for a URL without a scheme. Two URLs of one origin
// reach one server, and only that server may see the credentials it was given.
std::string url_origin(const std::string& url);

// Percent-encodes S for a URL query value.
std::string url_escape(const std::string& s);

} // namespace ks
