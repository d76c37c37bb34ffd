// What this build is: its version, the git commit it was built from ("unknown" outside a git
// checkout, as in a source package), and the archive formats it reads and writes.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace ks::cli {

const char* build_version(); // generated (cmake/version.cpp.in)
const char* build_commit();

// "kata-snapshot 0.1.0 (commit 1a2b3c4)"
std::string version_line();
nlohmann::json version_json();

} // namespace ks::cli
