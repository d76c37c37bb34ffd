// A real OCI registry for the end-to-end tests: Debian's docker-registry (distribution 2.8)
// on 127.0.0.1 with a configuration of its own (deletion enabled), plain HTTP or TLS with a CA
// made by the test, anonymous, htpasswd basic auth, or bearer tokens from a tiny token
// service in the test process (JWTs signed by openssl(1), with their certificate in x5c).
// Optionally its blob GETs and HEADs answer 307 to a separate static file server over its
// storage (busybox httpd), as registries on object storage or behind a CDN do.
#pragma once

#include "util/child_process.hpp"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace ks::test {

enum class RegistryAuth { none, basic, bearer };

struct RegistrySetup {
  bool tls = false;
  RegistryAuth auth = RegistryAuth::none;
  bool deletion = true;  // storage.delete.enabled
  bool redirect = false; // blob reads redirected to a static file server (the redirect middleware)
};

class TokenService;

class TestRegistry {
public:
  static constexpr const char* k_user = "backup";
  static constexpr const char* k_password = "s3cret-pass";

  // Starts it under DIR; skips the test when docker-registry, htpasswd or openssl (or, to
  // redirect, busybox) is missing.
  TestRegistry(std::string dir, RegistrySetup setup = {});
  ~TestRegistry();

  // docker://127.0.0.1:PORT/REPO_TAG
  std::string ref(const std::string& repo_tag) const;
  // What a client needs: --tls-verify=false (plain HTTP) or --cert-dir, and --creds. PREFIX:
  // "src-" or "dest-" for copy's per-side flags.
  std::vector<std::string> flags(const std::string& prefix = "") const;
  const std::string& cert_dir() const { return m_cert_dir; }

  void stop();  // SIGKILL, as a crash would
  void start(); // again, on the same storage and port

  // Blob files in its storage, and the data file of blob DIGEST.
  size_t blob_count() const;
  std::string blob_path(const std::string& digest) const;
  std::string log() const;
  // Blob reads the registry redirected (307 responses in its access log).
  size_t redirects() const;
  // The docker-registry process (the bench reads its CPU time).
  pid_t pid() const { return m_process.pid(); }
  // The static file server the registry redirects to (with redirect; its children are reaped).
  pid_t storage_pid() const { return m_storage.pid(); }

private:
  void write_config();

  std::string m_dir;
  RegistrySetup m_setup;
  int m_port = 0;
  int m_storage_port = 0; // the static file server's, with redirect
  std::string m_cert_dir;
  std::unique_ptr<TokenService> m_tokens;
  ChildProcess m_process;
  ChildProcess m_storage; // busybox httpd, with redirect
};

// Adds FLAGS to ARGV.
std::vector<std::string> with(std::vector<std::string> argv, const std::vector<std::string>& flags);

} // namespace ks::test
