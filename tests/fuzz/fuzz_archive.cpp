// Fuzz target: the archive reader (tar layer, manifest first, members, index.json last), as
// `load` and `verify` read a hostile .ksnap: every member is read and hash-checked, and the
// vmstate chunks are decompressed with the manifest's bound.
#include "storage/archive_reader.hpp"
#include "storage/zstd_codec.hpp"
#include "tests/fuzz/fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ks::fuzz::setup();
  ks::Fd fd = ks::fuzz::memory_file(data, size);
  try {
    ks::ArchiveReader reader(fd.get(), "fuzz.ksnap");
    size_t chunk = reader.manifest()["vmstate"].value("chunk_size", size_t{8} << 20);
    ks::Bytes out;
    while (auto m = reader.next()) {
      reader.check_member(*m);
      if (m->name.rfind("vmstate/", 0) == 0 && chunk <= (size_t{64} << 20)) {
        ks::zstd_decompress(m->data, chunk, out);
      }
    }
  } catch (const std::exception&) {
  }
  return 0;
}
