#include "storage/store/registry.hpp"

#include "util/cancel.hpp"
#include "util/crypto.hpp"
#include "util/error.hpp"
#include "util/json_fields.hpp"
#include "util/sha256.hpp"
#include "util/strings.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <set>
#include <thread>

namespace ks {

namespace {

constexpr int k_attempts = 5;                   // with backoff: 0.25 + 0.5 + 1 + 2 s between them
constexpr size_t k_max_tag_pages = 10000;       // of up to 1,000 tags each
constexpr uint64_t k_max_tag_bytes = 64u << 20; // every name in them together
constexpr const char* k_manifest_accept =
  "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

std::span<const std::byte> as_bytes(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

} // namespace

std::map<std::string, std::string> challenge_params(const std::string& header) {
  std::map<std::string, std::string> out;
  size_t i = header.find(' ');
  while (i != std::string::npos && i < header.size()) {
    size_t eq = header.find('=', i);
    if (eq == std::string::npos) {
      break;
    }
    std::string key = trim(header.substr(i, eq - i));
    if (!key.empty() && key[0] == ',') {
      key = trim(key.substr(1));
    }
    std::string value;
    size_t next = eq + 1;
    if (next < header.size() && header[next] == '"') {
      size_t close = header.find('"', next + 1);
      value = header.substr(next + 1, close == std::string::npos ? std::string::npos : close - next - 1);
      next = close == std::string::npos ? header.size() : close + 1;
    } else {
      size_t comma = header.find(',', next);
      value = trim(header.substr(next, comma == std::string::npos ? std::string::npos : comma - next));
      next = comma;
    }
    out[key] = value;
    i = next == std::string::npos ? next : header.find_first_not_of(", ", next);
  }
  return out;
}

namespace {

// The registry's error text (its JSON "errors" array), for messages.
std::string registry_says(const HttpResponse& r) {
  Json j = Json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("errors") && j["errors"].is_array() && !j["errors"].empty()) {
    const Json& e = j["errors"][0];
    if (e.is_object()) {
      return json_string(e, "code") +
             (json_string(e, "message").empty() ? "" : ": " + json_string(e, "message"));
    }
  }
  return "HTTP " + std::to_string(r.status);
}

bool retryable_status(long status) {
  return status == 429 || status >= 500;
}

} // namespace

struct Registry::State {
  RegistryOptions options;
  std::unique_ptr<HttpClient> http;
  std::string base;          // https://HOST or http://HOST, once known
  std::string authorization; // "Authorization: ..." to send, once challenged
  std::optional<Credentials> creds;
  bool creds_looked_up = false;
};

Registry::Registry(std::string host, std::string repo, RegistryOptions options)
  : m_host(std::move(host)), m_repo(std::move(repo)), m_state(std::make_unique<State>()) {
  m_state->options = std::move(options);
}

Registry::~Registry() = default;
Registry::Registry(Registry&&) noexcept = default;

void Registry::connect() {
  if (!m_state->base.empty()) {
    return;
  }
  // As skopeo: HTTPS, and plain HTTP only where TLS verification was turned off and the
  // registry does not speak TLS.
  if (!m_state->http) {
    m_state->http = std::make_unique<HttpClient>(m_state->options.tls);
  }
  std::string https = "https://" + m_host;
  try {
    m_state->http->perform({.method = "GET", .url = https + "/v2/"});
    m_state->base = https;
  } catch (const TransportError& e) {
    if (m_state->options.tls.verify || e.kind() == TransportError::Kind::unreachable) {
      throw;
    }
    m_state->base = "http://" + m_host;
  }
}

// Sends R with the authorization we hold. A 401 with a challenge is answered (basic
// credentials, or a new token: for a new scope, or after the last one expired) and R sent
// once more; a second 401 is the answer. Only to the registry itself: a request to another
// origin (an upload location on a storage service) goes without them, and its challenge
// is not answered, as docker's client does.
HttpResponse Registry::send(HttpRequest& r) {
  const bool ours = url_origin(r.url) == url_origin(m_state->base);
  auto perform = [&] {
    if (!ours) {
      return m_state->http->perform(r);
    }
    if (!m_state->authorization.empty()) {
      r.headers.push_back(m_state->authorization);
    }
    HttpResponse response = m_state->http->perform(r);
    if (!m_state->authorization.empty()) {
      r.headers.pop_back();
    }
    return response;
  };
  HttpResponse response = perform();
  if (ours && response.status == 401 && authenticate(response.header("www-authenticate"))) {
    response = perform();
  }
  return response;
}

bool Registry::authenticate(const std::string& challenge) {
  if (!m_state->creds_looked_up) {
    m_state->creds = find_credentials(m_state->options, m_host, m_repo);
    m_state->creds_looked_up = true;
  }
  std::string basic;
  if (m_state->creds) {
    std::string pair = m_state->creds->user + ":" + m_state->creds->password;
    basic = "Authorization: Basic " +
            base64(std::span(reinterpret_cast<const unsigned char*>(pair.data()), pair.size()));
  }
  if (lowercase(challenge.substr(0, 6)) == "basic ") {
    if (basic.empty() || m_state->authorization == basic) {
      return false; // none, or these were refused
    }
    m_state->authorization = basic;
    return true;
  }
  if (lowercase(challenge.substr(0, 7)) != "bearer ") {
    return false;
  }
  auto p = challenge_params(challenge);
  if (!(p["realm"].starts_with("https://") || p["realm"].starts_with("http://"))) {
    throw Error(name() + " asks for a token from a realm that is not a URL", ExitCode::registry_unauthorized);
  }
  std::string scope = p.count("scope") ? p["scope"] : "repository:" + m_repo + ":pull,push";
  HttpRequest token{.url =
                      p["realm"] + "?service=" + url_escape(p["service"]) + "&scope=" + url_escape(scope)};
  if (!basic.empty()) {
    token.headers.push_back(basic);
  }
  HttpResponse t = m_state->http->perform(token);
  if (t.status == 401 || t.status == 403) {
    return false; // the registry's 401 says it
  }
  Json j = Json::parse(t.body, nullptr, false);
  std::string value =
    json_string(j, "token").empty() ? json_string(j, "access_token") : json_string(j, "token");
  if (t.status != 200 || value.empty()) {
    throw Error("the token service " + p["realm"] + " of " + name() + " gave no token (" + registry_says(t) +
                  ")",
                ExitCode::registry_unauthorized);
  }
  m_state->authorization = "Authorization: Bearer " + value;
  return true;
}

HttpResponse Registry::call(HttpRequest r, Retry retry) {
  for (int attempt = 1;; ++attempt) {
    throw_if_cancelled();
    try {
      connect();
      if (!r.url.starts_with("http")) {
        r.url = m_state->base + r.url;
      }
      HttpResponse response = send(r);
      if (!(retry == Retry::yes && retryable_status(response.status) && attempt < k_attempts)) {
        return response;
      }
    } catch (const TransportError& e) {
      bool worth_it = e.kind() != TransportError::Kind::untrusted &&
                      (retry == Retry::yes || e.kind() == TransportError::Kind::unreachable);
      if (!worth_it || attempt >= k_attempts) {
        if (e.kind() == TransportError::Kind::untrusted) {
          throw Error(e.what(), ExitCode::registry_untrusted,
                      "pass --cert-dir DIR with the registry's CA as DIR/ca.crt, or --tls-verify=false");
        }
        throw Error(
          e.what(), ExitCode::registry_unreachable,
          m_state->options.tls.verify
            ? "check that the registry runs and speaks HTTPS; a plain HTTP registry needs --tls-verify=false"
            : "check that the registry runs, and retry");
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250 << (attempt - 1)));
  }
}

void Registry::fail(const std::string& what, const HttpResponse& r) {
  std::string says = registry_says(r);
  if (r.status == 401 || r.status == 403) {
    throw Error(what + ": " + name() + " refused the credentials (" + says + ")",
                ExitCode::registry_unauthorized,
                "pass --creds USER:PASS or --authfile FILE (skopeo login writes one)");
  }
  if (r.status == 404) {
    throw Error(what + ": " + name() + " has no such thing (" + says + ")", ExitCode::registry_not_found,
                "see what it holds with: kata-snapshot list " + name());
  }
  if (r.status >= 500 || r.status == 429) {
    throw Error(what + ": " + name() + " failed (" + says + ")", ExitCode::registry_unreachable,
                "the registry is overloaded or broken; retry later");
  }
  throw Error(what + ": " + name() + " refused it (" + says + ")");
}

std::optional<uint64_t> Registry::blob_size(const std::string& digest) {
  HttpResponse r = call({.method = "HEAD", .url = "/v2/" + m_repo + "/blobs/" + digest}, Retry::yes);
  if (r.status == 404) {
    return std::nullopt;
  }
  if (r.status != 200) {
    fail("cannot look up blob " + digest, r);
  }
  std::string length = r.header("content-length");
  return length.empty() ? std::nullopt : std::optional<uint64_t>(std::stoull(length));
}

void Registry::put_blob(const std::string& digest, std::span<const std::byte> data) {
  for (int attempt = 1;; ++attempt) {
    Upload upload(*this); // its POST is retried by call()
    try {
      upload.finish(digest, data); // the PUT with the body: a failed one needs a new session
      return;
    } catch (const Error& e) {
      if (e.code() != ExitCode::registry_unreachable || attempt >= k_attempts) {
        throw;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250 << (attempt - 1)));
  }
}

bool Registry::mount_blob(const std::string& digest, const std::string& from) {
  HttpResponse r = call(
    {.method = "POST",
     .url = "/v2/" + m_repo + "/blobs/uploads/?mount=" + url_escape(digest) + "&from=" + url_escape(from)},
    Retry::yes);
  return r.status == 201;
}

Registry::Upload::Upload(Registry& registry) : m_registry(registry) {
  HttpResponse r =
    registry.call({.method = "POST", .url = "/v2/" + registry.m_repo + "/blobs/uploads/"}, Retry::yes);
  if (r.status != 202 || r.header("location").empty()) {
    registry.fail("cannot start a blob upload", r);
  }
  m_location = r.header("location");
}

void Registry::Upload::append(std::span<const std::byte> data) {
  // distribution ignores Content-Range, and each answer names where the next piece goes.
  HttpRequest patch{
    .method = "PATCH",
    .url = resolve_url(m_registry.m_state->base + "/", m_location),
    .headers = {"Content-Range: " + std::to_string(m_sent) + "-" + std::to_string(m_sent + data.size() - 1)},
    .body = data};
  HttpResponse r = m_registry.call(patch, Retry::no);
  if (r.status != 202 || r.header("location").empty()) {
    m_registry.fail("cannot upload a blob piece", r);
  }
  m_location = r.header("location");
  m_sent += data.size();
}

void Registry::Upload::finish(const std::string& digest, std::span<const std::byte> tail) {
  std::string url = resolve_url(m_registry.m_state->base + "/", m_location);
  url += (url.find('?') == std::string::npos ? "?" : "&") + std::string("digest=") + url_escape(digest);
  HttpResponse r = m_registry.call({.method = "PUT", .url = url, .body = tail}, Retry::no);
  if (retryable_status(r.status)) {
    throw Error("cannot complete the upload of blob " + digest + ": " + m_registry.name() + " failed (" +
                  registry_says(r) + ")",
                ExitCode::registry_unreachable);
  }
  if (r.status != 201) {
    m_registry.fail("cannot complete the upload of blob " + digest, r);
  }
}

void Registry::read_blob_range(const Descriptor& d, uint64_t offset, uint64_t length,
                               const std::function<void(std::span<const std::byte>)>& sink) {
  uint64_t got = 0;
  for (int attempt = 1;; ++attempt) {
    // A retry resumes where the last attempt stopped.
    HttpRequest r{
      .url = "/v2/" + m_repo + "/blobs/" + d.digest,
      .headers = {"Range: bytes=" + std::to_string(offset + got) + "-" + std::to_string(offset + length - 1)},
      .on_data = [&](std::span<const std::byte> data) {
        if (got + data.size() > length) {
          throw Error(name() + " sent more of blob " + d.digest + " than asked for",
                      ExitCode::archive_invalid);
        }
        sink(data);
        got += data.size();
        return true;
      }};
    try {
      HttpResponse response = call(r, Retry::no);
      if (response.status == 206 || (response.status == 200 && offset + got == 0 && length == d.size)) {
        if (got == length) {
          return;
        }
      } else if (!(retryable_status(response.status) && attempt < k_attempts)) {
        fail("cannot read blob " + d.digest, response);
      }
    } catch (const Error& e) {
      if (e.code() != ExitCode::registry_unreachable || attempt >= k_attempts) {
        throw;
      }
    }
    if (attempt >= k_attempts) {
      throw Error(name() + " ended blob " + d.digest + " early, " + std::to_string(got) + " of " +
                    std::to_string(length) + " bytes",
                  ExitCode::registry_unreachable);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250 << (attempt - 1)));
  }
}

Bytes Registry::read_blob(const Descriptor& d, uint64_t max, const std::string& what) {
  if (d.size > max) {
    throw Error(what + " is damaged: blob " + d.digest + " is implausibly large", ExitCode::archive_invalid);
  }
  Bytes data;
  data.reserve(d.size);
  if (d.size > 0) {
    read_blob_range(d, 0, d.size, [&](std::span<const std::byte> b) { append(data, b); });
  }
  if (sha256_digest(sha256_hex(data)) != d.digest) {
    throw Error(what + " is damaged: blob " + d.digest + " does not have that digest",
                ExitCode::archive_invalid);
  }
  return data;
}

std::optional<Registry::Manifest> Registry::get_manifest(const std::string& ref) {
  HttpResponse r = call({.url = "/v2/" + m_repo + "/manifests/" + ref,
                         .headers = {k_manifest_accept},
                         .max_body = k_max_manifest_size},
                        Retry::yes);
  if (r.status == 404) {
    return std::nullopt;
  }
  if (r.status != 200) {
    fail("cannot read manifest " + ref, r);
  }
  Manifest m;
  m.data.assign(reinterpret_cast<const std::byte*>(r.body.data()),
                reinterpret_cast<const std::byte*>(r.body.data()) + r.body.size());
  std::string digest = sha256_digest(sha256_hex(r.body));
  if (ref.starts_with("sha256:") && digest != ref) {
    throw Error(name() + "@" + ref + " is damaged: the registry sent a manifest of digest " + digest,
                ExitCode::archive_invalid);
  }
  std::string type = r.header("content-type");
  m.descriptor = Descriptor{type.substr(0, type.find(';')), digest, r.body.size(), Json::object()};
  if (!ref.starts_with("sha256:")) {
    m.descriptor.annotations[k_oci_ref_name] = ref;
  }
  return m;
}

std::string Registry::put_manifest(const std::string& tag, const std::string& text) {
  HttpResponse r = call({.method = "PUT",
                         .url = "/v2/" + m_repo + "/manifests/" + tag,
                         .headers = {std::string("Content-Type: ") + k_oci_manifest_type},
                         .body = as_bytes(text)},
                        Retry::yes);
  if (r.status != 201) {
    fail("cannot put the snapshot's manifest as " + tag, r);
  }
  return sha256_digest(sha256_hex(text));
}

void Registry::delete_manifest(const std::string& digest) {
  HttpResponse r = call({.method = "DELETE", .url = "/v2/" + m_repo + "/manifests/" + digest}, Retry::yes);
  if (r.status == 405) {
    throw Error("cannot delete " + name() + "@" + digest + ": the registry does not allow deletion (" +
                  registry_says(r) + ")",
                ExitCode::failed, "enable it in the registry (distribution: storage.delete.enabled: true)");
  }
  if (r.status != 202 && r.status != 200) {
    fail("cannot delete manifest " + digest, r);
  }
}

std::optional<std::vector<std::string>> Registry::tags() {
  std::vector<std::string> out;
  std::set<std::string> fetched; // a hostile "next" page must not keep us going round
  uint64_t names = 0;
  std::string next = "/v2/" + m_repo + "/tags/list?n=1000";
  while (!next.empty()) {
    if (!fetched.insert(next).second || fetched.size() > k_max_tag_pages) {
      throw Error(name() + " sent a tag list that does not end (page " + std::to_string(fetched.size()) + ")",
                  ExitCode::archive_invalid);
    }
    HttpResponse r = call({.url = next, .max_body = 16u << 20}, Retry::yes);
    if (r.status == 404 && out.empty()) {
      return std::nullopt; // NAME_UNKNOWN: no repository yet
    }
    if (r.status != 200) {
      fail("cannot list the tags", r);
    }
    Json j = Json::parse(r.body, nullptr, false);
    if (!j.is_object() || !(j.value("tags", Json()).is_array() || j.value("tags", Json()).is_null())) {
      throw Error(name() + " sent a tag list that is not one", ExitCode::archive_invalid);
    }
    for (const auto& t : j.value("tags", Json::array())) {
      if (t.is_string()) {
        out.push_back(t.get<std::string>());
        names += out.back().size();
      }
    }
    if (names > k_max_tag_bytes) {
      throw Error(name() + " sent a tag list of over 64 MiB of names", ExitCode::archive_invalid);
    }
    // Link: </v2/REPO/tags/list?n=1000&last=X>; rel="next"
    std::string link = r.header("link");
    auto lt = link.find('<');
    auto gt = link.find('>');
    next = link.find("rel=\"next\"") != std::string::npos && lt != std::string::npos && gt > lt
             ? resolve_url(r.effective_url, link.substr(lt + 1, gt - lt - 1))
             : "";
    if (!next.empty() && url_origin(next) != url_origin(m_state->base)) {
      throw Error(name() + " sent a tag list whose next page is on another server (" + url_origin(next) + ")",
                  ExitCode::archive_invalid);
    }
  }
  return out;
}

} // namespace ks
