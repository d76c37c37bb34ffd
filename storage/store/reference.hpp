// Where a snapshot lives, as containers-transports(5) spells it (skopeo's vocabulary):
// PATH (a .ksnap file), - (a pipe), oci:DIR[:TAG] (an OCI image layout),
// docker://HOST[:PORT]/REPO[:TAG|@DIGEST] (a registry).
#pragma once

#include <string>

namespace ks {

struct Reference {
  enum class Kind { file, pipe, oci, registry };
  Kind kind = Kind::file;
  std::string path;               // file: the path; oci: the layout's directory; registry: HOST[:PORT]/REPO
  std::string tag;                // oci, registry: the tag, or "" (none given)
  std::string host, repo, digest; // registry: HOST[:PORT], REPO, and sha256:... after @
  std::string text;               // as the user wrote it

  // "oci:DIR:TAG" with the tag given, for messages and results.
  std::string with_tag(const std::string& t) const;
};

// Parses TEXT, or throws Error(exit 2): an empty directory, a malformed tag, a transport
// this tool does not speak.
Reference parse_reference(const std::string& text);

// True when TAG is a valid OCI tag: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
bool valid_tag(const std::string& tag);

} // namespace ks
