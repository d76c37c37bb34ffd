#include "storage/store/reference.hpp"

#include "util/error.hpp"
#include "util/strings.hpp"

#include <array>
#include <cctype>

namespace ks {

namespace {

// containers-transports(5) names this tool does not read or write.
constexpr std::array k_other_transports = {
  "oci-archive", "docker-archive", "docker-daemon", "dir", "containers-storage", "sif", "ostree"};

// A repository path component: [a-z0-9]+ joined by '.', '_', "__" or '-'s (distribution).
bool valid_component(const std::string& c) {
  auto alnum = [](char ch) {
    return std::isdigit(static_cast<unsigned char>(ch)) || (ch >= 'a' && ch <= 'z');
  };
  size_t i = 0;
  while (i < c.size()) {
    size_t run = i;
    while (i < c.size() && alnum(c[i])) {
      ++i;
    }
    if (i == run) {
      return false; // a separator first, or two in a row
    }
    if (i == c.size()) {
      return true;
    }
    size_t sep = i;
    while (i < c.size() && !alnum(c[i])) {
      ++i;
    }
    std::string s = c.substr(sep, i - sep);
    if (!(s == "." || s == "_" || s == "__" || s.find_first_not_of('-') == std::string::npos)) {
      return false;
    }
  }
  return false;
}

// docker://HOST[:PORT]/REPO[:TAG|@DIGEST], as skopeo reads it; a first component without
// '.' or ':' (and not localhost) is a Docker Hub path.
Reference parse_registry(const std::string& text) {
  Reference r;
  r.kind = Reference::Kind::registry;
  r.text = text;
  std::string rest = text.substr(9);
  auto usage = [&](const std::string& why) {
    throw Error(text + ": " + why, ExitCode::usage, "write docker://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]");
  };
  if (auto at = rest.find('@'); at != std::string::npos) {
    r.digest = rest.substr(at + 1);
    rest = rest.substr(0, at);
    if (!r.digest.starts_with("sha256:") || r.digest.size() != 71 ||
        r.digest.find_first_not_of("0123456789abcdef", 7) != std::string::npos) {
      usage("\"" + r.digest + "\" is not a sha256 digest");
    }
  }
  auto slash = rest.find('/');
  auto colon = rest.rfind(':');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
    r.tag = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
    if (!valid_tag(r.tag)) {
      usage("\"" + r.tag + "\" is not a valid tag");
    }
    if (!r.digest.empty()) {
      usage("give a tag or a digest, not both");
    }
  }
  if (rest.empty()) {
    usage("it names no repository");
  }
  slash = rest.find('/');
  std::string first = rest.substr(0, slash);
  if (slash == std::string::npos ||
      (first.find_first_of(".:") == std::string::npos && first != "localhost")) {
    r.host = "registry-1.docker.io"; // docker.io
    r.repo = slash == std::string::npos ? "library/" + rest : rest;
  } else {
    r.host = first;
    r.repo = rest.substr(slash + 1);
  }
  if (r.host.empty() || r.repo.empty() || r.repo.size() > 255) {
    usage("it names no repository");
  }
  for (const auto& c : split(r.repo, '/')) {
    if (!valid_component(c)) {
      usage("\"" + r.repo + "\" is not a repository name (lowercase letters, digits, '.', '_', '-', '/')");
    }
  }
  r.path = r.host + "/" + r.repo;
  return r;
}

} // namespace

bool valid_tag(const std::string& tag) {
  if (tag.empty() || tag.size() > 128 ||
      !(std::isalnum(static_cast<unsigned char>(tag[0])) || tag[0] == '_')) {
    return false;
  }
  for (char c : tag) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-')) {
      return false;
    }
  }
  return true;
}

std::string Reference::with_tag(const std::string& t) const {
  switch (kind) {
  case Kind::oci:
    return "oci:" + path + (t.empty() ? "" : ":" + t);
  case Kind::registry:
    return "docker://" + path + (t.empty() ? (digest.empty() ? "" : "@" + digest) : ":" + t);
  default:
    return text;
  }
}

Reference parse_reference(const std::string& text) {
  Reference r;
  r.text = text;
  if (text.empty()) {
    throw Error("an empty snapshot reference", ExitCode::usage);
  }
  if (text == "-") {
    r.kind = Reference::Kind::pipe;
    return r;
  }
  if (text.starts_with("docker://")) {
    return parse_registry(text);
  }
  auto colon = text.find(':');
  if (colon != std::string::npos && text.substr(0, colon) != "oci") {
    std::string transport = text.substr(0, colon);
    for (const char* t : k_other_transports) {
      if (transport == t) {
        throw Error("cannot use " + text + ": the " + transport + " transport is not supported",
                    ExitCode::usage, "use oci:DIR[:TAG], a .ksnap path, or - for a pipe");
      }
    }
  }
  if (colon == std::string::npos || text.substr(0, colon) != "oci") {
    r.path = text; // a file path, colons and all
    return r;
  }
  r.kind = Reference::Kind::oci;
  std::string rest = text.substr(colon + 1);
  auto sep = rest.find(':'); // as skopeo: the directory ends at the first colon
  r.path = rest.substr(0, sep);
  r.tag = sep == std::string::npos ? "" : rest.substr(sep + 1);
  if (r.path.empty()) {
    throw Error(text + ": the oci: reference names no directory", ExitCode::usage,
                "write oci:DIR or oci:DIR:TAG");
  }
  if (sep != std::string::npos && !valid_tag(r.tag)) {
    throw Error(text + ": \"" + r.tag + "\" is not a valid tag", ExitCode::usage,
                "a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'");
  }
  return r;
}

} // namespace ks
