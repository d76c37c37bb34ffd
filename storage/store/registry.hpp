// An OCI registry repository (docker://HOST[:PORT]/REPO), spoken to with the OCI
// distribution API: blobs checked by HEAD and uploaded with POST then PUT (or PATCH pieces),
// manifests put last, pulled by tag or digest, tags listed, manifests deleted by digest.
// Authentication as skopeo does it (--creds, auth files; basic, or a bearer token from the
// registry's token service), retries with backoff on 5xx, resets and timeouts. Nothing it
// reads is trusted: manifests are capped and hashed, and blobs are checked by the caller.
#pragma once

#include "storage/store/oci_layout.hpp"
#include "util/http.hpp"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ks {

// How to reach a registry: skopeo's flags.
struct RegistryOptions {
  std::string creds;    // --creds USER[:PASS]
  std::string authfile; // --authfile (containers-auth.json(5)); "" looks in the usual places
  TlsOptions tls;       // --tls-verify, --cert-dir
};

// USER and PASS for HOST (and REPO, for per-repository entries of an auth file), from
// OPTIONS' --creds, else the first auth file that exists: --authfile, $REGISTRY_AUTH_FILE,
// $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json. nullopt: anonymous.
struct Credentials {
  std::string user, password;
};
std::optional<Credentials> find_credentials(const RegistryOptions& options, const std::string& host,
                                            const std::string& repo);

// The parameters of a WWW-Authenticate challenge: Bearer realm="...",service="...",scope="...".
std::map<std::string, std::string> challenge_params(const std::string& header);

class Registry {
public:
  // HOST[:PORT] and REPO (as docker://HOST/REPO names them); nothing is sent until needed.
  Registry(std::string host, std::string repo, RegistryOptions options);
  ~Registry();
  Registry(Registry&&) noexcept;
  Registry& operator=(Registry&&) = delete;

  const std::string& host() const { return m_host; }
  const std::string& repo() const { return m_repo; }
  std::string name() const { return "docker://" + m_host + "/" + m_repo; }

  // The size of blob DIGEST as the registry says it has it, or nullopt. Only a hint to skip
  // an upload: a pull checks every digest.
  std::optional<uint64_t> blob_size(const std::string& digest);
  // Uploads DATA as blob DIGEST in one POST and PUT (the registry checks the digest).
  void put_blob(const std::string& digest, std::span<const std::byte> data);
  // Mounts blob DIGEST from repository FROM of the same registry; false when the registry
  // declined (then upload it).
  bool mount_blob(const std::string& digest, const std::string& from);

  // A blob uploaded in pieces (PATCH) and completed with its digest.
  class Upload {
  public:
    explicit Upload(Registry& registry);
    void append(std::span<const std::byte> data);
    // The last piece goes with the PUT that completes the upload.
    void finish(const std::string& digest, std::span<const std::byte> tail = {});

  private:
    Registry& m_registry;
    std::string m_location;
    uint64_t m_sent = 0;
  };

  // Streams bytes [OFFSET, OFFSET + LENGTH) of blob D to SINK. Nothing is checked here.
  void read_blob_range(const Descriptor& d, uint64_t offset, uint64_t length,
                       const std::function<void(std::span<const std::byte>)>& sink);
  // Reads blob D whole (at most MAX bytes), checking its size and digest (exit 3).
  Bytes read_blob(const Descriptor& d, uint64_t max, const std::string& what);

  // The image manifest REF (a tag or sha256:... digest) names, its descriptor (digest of
  // the bytes received, checked against REF when it is a digest) and bytes; nullopt when the
  // registry does not have it.
  struct Manifest {
    Descriptor descriptor;
    Bytes data;
  };
  std::optional<Manifest> get_manifest(const std::string& ref);
  // Puts TEXT (an image manifest) under TAG; returns its digest.
  std::string put_manifest(const std::string& tag, const std::string& text);
  // Deletes the manifest DIGEST (the registry drops every tag of it).
  void delete_manifest(const std::string& digest);
  // The repository's tags, every page; nullopt when the repository does not exist (yet).
  std::optional<std::vector<std::string>> tags();

private:
  struct State;
  enum class Retry { yes, no };
  HttpResponse call(HttpRequest r, Retry retry);
  HttpResponse send(HttpRequest& r);
  bool authenticate(const std::string& challenge); // false: no answer to it
  void connect();                                  // the first request: HTTPS, or where allowed plain HTTP
  [[noreturn]] void fail(const std::string& what, const HttpResponse& r);

  std::string m_host;
  std::string m_repo;
  std::unique_ptr<State> m_state;
};

} // namespace ks
