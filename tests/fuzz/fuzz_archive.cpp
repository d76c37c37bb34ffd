// Fuzz target: the archive reader (tar layer, manifest first, members, index.json last), as
// `load` and `verify` read a hostile .ksnap: every member is read and hash-checked, and the
// vmstate chunks are decompressed with the manifest's bound. An encrypted one is opened with
// the key file of the seed (40 times 'k'), its headers checked first as `load` does.
#include "storage/archive_reader.hpp"
#include "storage/store/store.hpp"
#include "storage/zstd_codec.hpp"
#include "tests/fuzz/fuzz_util.hpp"

#include <sys/stat.h>

namespace {

const ks::DecryptKey& seed_key() {
  static const ks::DecryptKey key = [] {
    static ks::Fd file =
      ks::fuzz::memory_file(reinterpret_cast<const uint8_t*>(std::string(40, 'k').data()), 40);
    ::fchmod(file.get(), 0600);
    return ks::DecryptKey::load("/proc/self/fd/" + std::to_string(file.get()));
  }();
  return key;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ks::fuzz::setup();
  ks::Fd fd = ks::fuzz::memory_file(data, size);
  try {
    ks::ArchiveReader reader(fd.get(), "fuzz.ksnap");
    if (reader.encrypted()) {
      reader.unlock(seed_key());
      std::string self = "/proc/self/fd/" + std::to_string(fd.get());
      ks::check_sealed_headers(ks::peek_index(self, "seals are checked"), reader);
    }
    size_t chunk = reader.manifest()["vmstate"].value("chunk_size", size_t{8} << 20);
    ks::Bytes out;
    while (auto m = reader.next()) {
      reader.check_member(*m);
      if (m->name.rfind("vmstate/", 0) == 0 && chunk <= (size_t{64} << 20)) {
        ks::zstd_decompress(m->data, chunk, out);
      }
    }
  } catch (const ks::Error&) {
  }
  return 0;
}
