// The registry client's pure parts: challenges, URLs, credentials from auth files; and what
// a real registry cannot be made to answer, against a fake one. The protocol itself is
// tested against a real registry (tests/e2e/test_registry.cpp).
#include "storage/store/registry.hpp"
#include "tests/support/fake_http.hpp"
#include "util/crypto.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/http.hpp"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>

using namespace ks;
namespace fs = std::filesystem;

namespace {

std::string b64(const std::string& s) {
  return base64(std::span(reinterpret_cast<const unsigned char*>(s.data()), s.size()));
}

void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  Fd f = open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  write_all(f.get(), text, path);
}

// Sets an environment variable for one scope.
class Env {
public:
  Env(const char* name, const std::string& value) : m_name(name) {
    const char* old = std::getenv(name);
    m_old = old ? std::optional<std::string>(old) : std::nullopt;
    ::setenv(name, value.c_str(), 1);
  }
  ~Env() { m_old ? (void)::setenv(m_name, m_old->c_str(), 1) : (void)::unsetenv(m_name); }

private:
  const char* m_name;
  std::optional<std::string> m_old;
};

} // namespace

TEST_CASE("registry: WWW-Authenticate challenges") {
  auto p = challenge_params(
    R"(Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push")");
  CHECK(p["realm"] == "https://auth.example.com/token");
  CHECK(p["service"] == "registry.example.com");
  CHECK(p["scope"] == "repository:a/b:pull,push");
  CHECK(challenge_params(R"(Basic realm="Registry Realm")")["realm"] == "Registry Realm");
  CHECK(challenge_params("Bearer realm=https://x/t, service=s")["service"] == "s");
  CHECK(challenge_params("Bearer").empty());
  CHECK(challenge_params(R"(Bearer realm="unterminated)")["realm"] == "unterminated");
}

TEST_CASE("registry: upload locations, relative or absolute") {
  CHECK(resolve_url("http://r:5000/", "/v2/a/blobs/uploads/u?_state=x") ==
        "http://r:5000/v2/a/blobs/uploads/u?_state=x");
  CHECK(resolve_url("http://r:5000/v2/a/", "https://s3/x") == "https://s3/x");
  CHECK(resolve_url("http://r:5000/v2/a/blobs/", "uploads/1") == "http://r:5000/v2/a/blobs/uploads/1");
  CHECK(url_escape("sha256:ab/c d") == "sha256%3Aab%2Fc%20d");
}

TEST_CASE("registry: URL origins") {
  CHECK(url_origin("https://R:443/v2/a") == "https://r");
  CHECK(url_origin("HTTP://r:80?x") == "http://r");
  CHECK(url_origin("http://r:5000#f") == "http://r:5000");
  CHECK(url_origin("https://user:pw@r:5000/x") == "https://r:5000");
  CHECK(url_origin("https://[::1]:443/") == "https://[::1]");
  CHECK(url_origin("https://[::1]/") == "https://[::1]");
  CHECK(url_origin("http://r:443/") != url_origin("https://r/"));
  CHECK(url_origin("/v2/a") == "");
}

TEST_CASE("registry: credentials go to the registry only, and a tag list must end") {
  using ks::test::FakeHttp;
  const std::string basic = "Authorization: Basic " + b64("u:p");
  auto authorized = [&](const FakeHttp::Request& r) {
    return std::find(r.headers.begin(), r.headers.end(), basic) != r.headers.end();
  };
  FakeHttp storage([](const FakeHttp::Request&) { return FakeHttp::reply(201); });
  std::string next_page;             // what the tag list's Link header names
  std::atomic<bool> big_tags{false}; // set here, read by the fake registry's thread
  std::atomic<int> pages{0};         // the pages it served
  FakeHttp registry([&](const FakeHttp::Request& r) {
    if (!authorized(r)) {
      return FakeHttp::reply(401, {"WWW-Authenticate: Basic realm=\"fake\""});
    }
    if (r.method == "POST") { // an upload session, on a storage service
      return FakeHttp::reply(202, {"Location: " + storage.url() + "/upload/1?state=s"});
    }
    if (r.target.starts_with("/v2/a/tags/list") && big_tags) { // a new page each time, 1 MiB of names each
      return FakeHttp::reply(200,
                             {"Content-Type: application/json",
                              "Link: </v2/a/tags/list?last=" + std::to_string(++pages) + ">; rel=\"next\""},
                             R"({"name": "a", "tags": [")" + std::string(1u << 20, 't') + R"("]})");
    }
    if (r.target.starts_with("/v2/a/tags/list")) {
      return FakeHttp::reply(200,
                             {"Content-Type: application/json", "Link: <" + next_page + ">; rel=\"next\""},
                             R"({"name": "a", "tags": ["t"]})");
    }
    return FakeHttp::reply(r.target == "/v2/" ? 200 : 404);
  });
  RegistryOptions o{.creds = "u:p", .tls = {.verify = false}};
  Registry reg(registry.host(), "a", o);

  const std::string data = "blob";
  reg.put_blob("sha256:0123", std::as_bytes(std::span(data.data(), data.size())));
  auto put = storage.requests();
  REQUIRE(put.size() == 1);
  CHECK(put[0].method == "PUT");
  CHECK(put[0].target.starts_with("/upload/1?state=s&digest=sha256%3A0123"));
  CHECK_FALSE(put[0].has_header("Authorization")); // not for another origin
  auto posts = registry.requests();
  CHECK(std::any_of(posts.begin(), posts.end(),
                    [&](const auto& r) { return r.method == "POST" && authorized(r); }));

  SECTION("a next page that is the same page") {
    next_page = "/v2/a/tags/list?n=1000";
    try {
      reg.tags();
      FAIL("a looping tag list was followed");
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::archive_invalid);
      CHECK_THAT(e.what(), Catch::Contains("a tag list that does not end"));
    }
  }
  SECTION("a next page on another server") {
    next_page = storage.url() + "/v2/a/tags/list?last=t";
    try {
      reg.tags();
      FAIL("a tag list page on another server was followed");
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::archive_invalid);
      CHECK_THAT(e.what(), Catch::Contains("on another server (" + storage.url() + ")"));
    }
    CHECK(storage.requests().size() == 1); // only the upload's PUT
  }
  SECTION("pages that never end, with 1 MiB of names each") {
    big_tags = true;
    try {
      reg.tags();
      FAIL("an endless tag list was read to the end");
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::archive_invalid);
      CHECK_THAT(e.what(), Catch::Contains("a tag list of over 64 MiB of names"));
    }
    CHECK(pages == 65);
  }
}

TEST_CASE("registry: credentials from --creds and containers-auth.json files") {
  std::string dir = fs::temp_directory_path() / ("ksnap-auth-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  Env home("HOME", dir + "/home");
  Env xdg("XDG_RUNTIME_DIR", dir + "/run");
  ::unsetenv("REGISTRY_AUTH_FILE");
  RegistryOptions o;
  CHECK_FALSE(find_credentials(o, "r:5000", "a/b")); // no file anywhere: anonymous

  write_text(dir + "/home/.docker/config.json",
             R"({"auths": {"https://r:5000": {"auth": ")" + b64("docker:pw1") + R"("}}})");
  auto c = find_credentials(o, "r:5000", "a/b");
  REQUIRE(c);
  CHECK(c->user == "docker");
  CHECK(c->password == "pw1");

  // The containers file comes first; a per-repository entry beats the host's.
  write_text(dir + "/run/containers/auth.json", R"({"auths": {"r:5000": {"auth": ")" + b64("host:pw2") +
                                                  R"("}, "r:5000/a": {"auth": ")" + b64("ns:pw:with:colons") +
                                                  R"("}}})");
  CHECK(find_credentials(o, "r:5000", "a/b")->user == "ns");
  CHECK(find_credentials(o, "r:5000", "a/b")->password == "pw:with:colons");
  CHECK(find_credentials(o, "r:5000", "c")->user == "host");

  o.creds = "me:secret";
  CHECK(find_credentials(o, "r:5000", "a/b")->user == "me");
  o.creds = "nocolon";
  CHECK_THROWS_AS(find_credentials(o, "r:5000", "a/b"), Error);

  RegistryOptions f;
  f.authfile = dir + "/missing.json";
  CHECK_THROWS_WITH(find_credentials(f, "r:5000", "a"), Catch::Contains("does not exist"));
  write_text(dir + "/bad.json", R"({"auths": {"r:5000": {"auth": "!!!"}}})");
  f.authfile = dir + "/bad.json";
  CHECK_THROWS_WITH(find_credentials(f, "r:5000", "a"), Catch::Contains("not base64"));
  fs::remove_all(dir);
}
