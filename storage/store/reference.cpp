#include "storage/store/reference.hpp"

#include "util/error.hpp"

#include <array>
#include <cctype>

namespace ks {

namespace {

// containers-transports(5) names this tool does not read or write.
constexpr std::array k_other_transports = {
  "oci-archive", "docker-archive", "docker-daemon", "dir", "containers-storage", "sif", "ostree"};

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
    return "docker://" + path + (t.empty() ? "" : ":" + t);
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
    throw Error("cannot use " + text + ": OCI registries (docker://) are not supported by this version",
                ExitCode::usage, "use oci:DIR[:TAG] or a .ksnap file, and move it with skopeo copy");
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
