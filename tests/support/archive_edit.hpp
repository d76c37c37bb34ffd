// Tests that tamper with archives: every member of a .ksnap tar with its header, and a tar
// written back from such a list (headers as given: no hash is recomputed unless the test
// does it).
#pragma once

#include "storage/entry_io.hpp"

#include <string>
#include <vector>

namespace ks::test {

struct RawMember {
  ArchiveEntry entry;
  std::string data;
};

std::vector<RawMember> read_members(const std::string& path);
void write_members(const std::string& path, const std::vector<RawMember>& members);

} // namespace ks::test
