#include "util/http.hpp"

#include "util/cancel.hpp"
#include "util/fd.hpp"
#include "util/strings.hpp"

#include <algorithm>
#include <cctype>
#include <curl/curl.h>
#include <dirent.h>
#include <exception>
#include <fcntl.h>
#include <mutex>

namespace ks {

namespace {

constexpr const char* k_system_cas = "/etc/ssl/certs/ca-certificates.crt";

// The files of DIR whose names end in SUFFIX, sorted ("" when DIR is not there).
std::vector<std::string> files_ending(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> out;
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) {
    throw_errno("cannot read the certificate directory " + dir);
  }
  while (dirent* e = ::readdir(d.get())) {
    std::string name = e->d_name;
    if (name.size() > suffix.size() && name.ends_with(suffix)) {
      out.push_back(dir + "/" + name);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct Transfer {
  const HttpRequest* request = nullptr;
  HttpResponse* response = nullptr;
  std::exception_ptr failure;
  bool too_large = false;
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string line(data, size * n);
  if (line.starts_with("HTTP/")) { // a new response (after a redirect or a 100 Continue)
    t->response->headers.clear();
    return size * n;
  }
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    t->response->headers[lowercase(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  }
  return size * n;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  auto bytes = std::as_bytes(std::span(data, size * n));
  try {
    if (t->request->on_data && t->response->status / 100 == 2) {
      return t->request->on_data(bytes) ? bytes.size() : 0;
    }
    if (t->response->body.size() + bytes.size() > t->request->max_body) {
      t->too_large = true;
      return 0;
    }
    t->response->body.append(data, size * n);
    return bytes.size();
  } catch (...) {
    t->failure = std::current_exception();
    return 0;
  }
}

TransportError transport_error(CURLcode code, const std::string& url, const char* detail) {
  std::string why = *detail ? detail : curl_easy_strerror(code);
  switch (code) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_CONNECT:
    return {TransportError::Kind::unreachable, "cannot reach " + url + ": " + why};
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    return {TransportError::Kind::untrusted, "TLS with " + url + " failed: " + why};
  default:
    return {TransportError::Kind::interrupted, "the request to " + url + " failed: " + why};
  }
}

} // namespace

struct HttpClient::Impl {
  TlsOptions tls;
  CURL* curl = nullptr;
  std::string ca_blob; // the system CAs and --cert-dir's, when --cert-dir is given
  std::string client_cert, client_key;
  curl_slist* headers = nullptr;

  void load_cert_dir() {
    if (tls.cert_dir.empty()) {
      return;
    }
    if (::access(k_system_cas, R_OK) == 0) { // the system's CAs stay trusted
      ca_blob = read_file(k_system_cas) + "\n";
    }
    for (const auto& f : files_ending(tls.cert_dir, ".crt")) {
      ca_blob += read_file(f) + "\n";
    }
    for (const auto& cert : files_ending(tls.cert_dir, ".cert")) {
      std::string key = cert.substr(0, cert.size() - 5) + ".key";
      if (::access(key.c_str(), R_OK) != 0) {
        throw Error("the client certificate " + cert + " has no key " + key, ExitCode::usage,
                    "--cert-dir holds CA.crt files, and NAME.cert with NAME.key");
      }
      client_cert = cert;
      client_key = key;
      break;
    }
  }

  void set_tls() {
    if (!tls.verify) {
      curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (!ca_blob.empty()) {
      curl_blob blob{ca_blob.data(), ca_blob.size(), CURL_BLOB_NOCOPY};
      curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &blob);
    }
    if (!client_cert.empty()) {
      curl_easy_setopt(curl, CURLOPT_SSLCERT, client_cert.c_str());
      curl_easy_setopt(curl, CURLOPT_SSLKEY, client_key.c_str());
    }
  }
};

HttpClient::HttpClient(TlsOptions tls) : m_impl(std::make_unique<Impl>()) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  m_impl->tls = std::move(tls);
  m_impl->load_cert_dir();
  m_impl->curl = curl_easy_init();
  if (!m_impl->curl) {
    throw Error("cannot start an HTTP client (curl_easy_init failed)");
  }
}

HttpClient::~HttpClient() {
  curl_slist_free_all(m_impl->headers);
  curl_easy_cleanup(m_impl->curl);
}

HttpResponse HttpClient::perform(const HttpRequest& r) {
  CURL* c = m_impl->curl;
  curl_easy_reset(c); // keeps the connection and the TLS session
  curl_slist_free_all(m_impl->headers);
  m_impl->headers = nullptr;
  HttpResponse response;
  Transfer t{&r, &response, nullptr, false};
  char detail[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(c, CURLOPT_URL, r.url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, detail);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L); // a stalled transfer: 30 s without a byte
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, static_cast<long>(r.timeout.count()));
  curl_easy_setopt(c, CURLOPT_USERAGENT, "kata-snapshot");
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  // Blob downloads may be redirected to storage; curl does not send our Authorization
  // header to another host.
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, r.method == "GET" || r.method == "HEAD" ? 1L : 0L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(
    c, CURLOPT_XFERINFOFUNCTION, +[](void*, curl_off_t, curl_off_t, curl_off_t, curl_off_t) -> int {
      return cancel_requested() ? 1 : 0; // SIGINT, SIGTERM: the transfer ends at once
    });
  m_impl->set_tls();
  for (const auto& h : r.headers) {
    m_impl->headers = curl_slist_append(m_impl->headers, h.c_str());
  }
  m_impl->headers = curl_slist_append(m_impl->headers, "Expect:");
  if (r.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (r.method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r.method.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
    curl_easy_setopt(c, CURLOPT_POSTFIELDS,
                     r.body.empty() ? "" : reinterpret_cast<const char*>(r.body.data()));
    bool typed = std::any_of(r.headers.begin(), r.headers.end(),
                             [](const std::string& h) { return lowercase(h).starts_with("content-type:"); });
    if (!typed) {
      m_impl->headers = curl_slist_append(m_impl->headers, "Content-Type: application/octet-stream");
    }
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, m_impl->headers);
  // The status is known before the body arrives: on_body needs it to stream only a 2xx body.
  curl_easy_setopt(
    c, CURLOPT_HEADERFUNCTION, +[](char* d, size_t s, size_t n, void* u) -> size_t {
      auto* tr = static_cast<Transfer*>(u);
      std::string line(d, s * n);
      if (line.starts_with("HTTP/")) {
        auto sp = line.find(' ');
        tr->response->status = sp == std::string::npos ? 0 : std::atol(line.c_str() + sp + 1);
      }
      return on_header(d, s, n, u);
    });
  CURLcode code = curl_easy_perform(c);
  if (t.failure) {
    std::rethrow_exception(t.failure);
  }
  if (t.too_large) {
    throw Error("the answer of " + r.url + " is larger than the " + std::to_string(r.max_body) +
                  " bytes expected of it",
                ExitCode::archive_invalid);
  }
  if (code == CURLE_ABORTED_BY_CALLBACK) {
    throw_if_cancelled();
  }
  if (code == CURLE_WRITE_ERROR && r.on_data) {
    throw Error("the download of " + r.url + " was stopped");
  }
  if (code != CURLE_OK) {
    throw transport_error(code, r.url, detail);
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  char* effective = nullptr;
  curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &effective);
  response.effective_url = effective ? effective : r.url;
  return response;
}

std::string HttpResponse::header(const std::string& lowercase_name) const {
  auto it = headers.find(lowercase_name);
  return it == headers.end() ? std::string() : it->second;
}

std::string resolve_url(const std::string& base, const std::string& ref) {
  if (ref.starts_with("http://") || ref.starts_with("https://")) {
    return ref;
  }
  auto scheme = base.find("://");
  auto host_end = base.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  std::string origin = host_end == std::string::npos ? base : base.substr(0, host_end);
  if (ref.starts_with("/")) {
    return origin + ref;
  }
  auto last = base.rfind('/');
  return (last == std::string::npos || last < scheme + 3 ? origin + "/" : base.substr(0, last + 1)) + ref;
}

std::string url_origin(const std::string& url) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos || scheme_end == 0) {
    return "";
  }
  std::string scheme = lowercase(url.substr(0, scheme_end));
  std::string authority =
    url.substr(scheme_end + 3, url.find_first_of("/?#", scheme_end + 3) - scheme_end - 3);
  if (auto at = authority.rfind('@'); at != std::string::npos) {
    authority.erase(0, at + 1);
  }
  authority = lowercase(authority);
  auto colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']', colon) == std::string::npos) { // not inside [v6]
    std::string port = authority.substr(colon + 1);
    if (port.empty() || (scheme == "http" && port == "80") || (scheme == "https" && port == "443")) {
      authority.erase(colon);
    }
  }
  return scheme + "://" + authority;
}

std::string url_escape(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += hex[ch >> 4];
      out += hex[ch & 15];
    }
  }
  return out;
}

} // namespace ks
