#include "tests/support/archive_edit.hpp"

#include "storage/tar.hpp"
#include "util/fd.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace ks::test {

std::vector<RawMember> read_members(const std::string& path) {
  Fd in = open_file(path, O_RDONLY);
  TarReader t(in.get(), path);
  std::vector<RawMember> out;
  ArchiveEntry e;
  while (t.next(e)) {
    RawMember m{e, std::string(e.size, '\0')};
    size_t got = 0;
    while (got < e.size) {
      size_t n = t.read(std::as_writable_bytes(std::span(m.data)).subspan(got));
      if (n == 0) {
        break;
      }
      got += n;
    }
    m.data.resize(got);
    out.push_back(std::move(m));
  }
  return out;
}

void write_members(const std::string& path, const std::vector<RawMember>& members) {
  ::unlink(path.c_str());
  Fd out = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
  TarWriter t(out.get(), path);
  for (const auto& m : members) {
    t.add(m.entry.name, std::as_bytes(std::span(m.data)), m.entry.attrs);
  }
  t.close();
}

} // namespace ks::test
