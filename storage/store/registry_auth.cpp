// Registry credentials, found where skopeo and podman find them (containers-auth.json(5)).
#include "storage/store/registry.hpp"

#include "util/crypto.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"

#include <cstdlib>
#include <unistd.h>

namespace ks {

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// The auth files to read, most specific first: --authfile alone when given.
std::vector<std::string> auth_files(const RegistryOptions& o) {
  if (!o.authfile.empty()) {
    return {o.authfile};
  }
  std::vector<std::string> out;
  if (!env("REGISTRY_AUTH_FILE").empty()) {
    out.push_back(env("REGISTRY_AUTH_FILE"));
  }
  if (!env("XDG_RUNTIME_DIR").empty()) {
    out.push_back(env("XDG_RUNTIME_DIR") + "/containers/auth.json");
  }
  if (!env("HOME").empty()) {
    out.push_back(env("HOME") + "/.docker/config.json");
  }
  return out;
}

// The keys an entry for HOST/REPO may have in "auths": HOST/REPO, its parent namespaces,
// HOST, and the URL forms docker writes.
std::vector<std::string> auth_keys(const std::string& host, const std::string& repo) {
  std::vector<std::string> keys;
  std::string path = host + "/" + repo;
  while (path.size() > host.size()) {
    keys.push_back(path);
    path = path.substr(0, path.rfind('/'));
  }
  keys.push_back(host);
  keys.push_back("https://" + host);
  keys.push_back("http://" + host);
  if (host == "registry-1.docker.io") {
    keys.push_back("docker.io");
    keys.push_back("https://index.docker.io/v1/");
  }
  return keys;
}

Credentials split_pair(const std::string& pair, const std::string& where) {
  auto colon = pair.find(':');
  if (colon == std::string::npos || colon == 0) {
    throw Error(where + " is not USER:PASSWORD", ExitCode::usage);
  }
  return {pair.substr(0, colon), pair.substr(colon + 1)};
}

} // namespace

std::optional<Credentials> find_credentials(const RegistryOptions& o, const std::string& host,
                                            const std::string& repo) {
  if (!o.creds.empty()) {
    return split_pair(o.creds, "--creds");
  }
  for (const auto& file : auth_files(o)) {
    if (::access(file.c_str(), F_OK) != 0) {
      if (!o.authfile.empty()) {
        throw Error("cannot read the auth file " + file + ": it does not exist", ExitCode::usage);
      }
      continue;
    }
    Json j = Json::parse(read_file(file), nullptr, false);
    if (!j.is_object() || !j.value("auths", Json::object()).is_object()) {
      throw Error("the auth file " + file + " is not a containers-auth.json file", ExitCode::usage);
    }
    const Json auths = j.value("auths", Json::object());
    for (const auto& key : auth_keys(host, repo)) {
      auto it = auths.find(key);
      if (it == auths.end() || !it->is_object() || !it->value("auth", Json()).is_string()) {
        continue;
      }
      std::optional<std::string> pair = base64_decode((*it)["auth"].get<std::string>());
      if (!pair) {
        throw Error("the auth file " + file + " has an entry for " + key + " that is not base64",
                    ExitCode::usage);
      }
      return split_pair(*pair, "the auth file " + file + "'s entry for " + key);
    }
  }
  return std::nullopt;
}

} // namespace ks
