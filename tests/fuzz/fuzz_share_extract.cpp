// Fuzz target: restoring a share from a hostile archive. The input is the tar stream (the
// harness compresses it, as a share member is); whatever it holds, nothing may appear
// outside the target directory.
#include "storage/tar.hpp"
#include "storage/zstd_codec.hpp"
#include "tests/fuzz/fuzz_util.hpp"

#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ks::fuzz::setup();
  static const std::string root = ks::fuzz::temp_dir();
  const std::string target = root + "/share";
  fs::remove_all(target);
  fs::create_directories(target);
  ks::Bytes frame;
  ks::zstd_compress(std::span(reinterpret_cast<const std::byte*>(data), size), 1, frame);
  size_t offset = 0;
  ks::ByteSource source = [&](std::span<std::byte> buf) {
    size_t n = std::min(buf.size(), frame.size() - offset);
    std::memcpy(buf.data(), frame.data() + offset, n);
    offset += n;
    return n;
  };
  try {
    ks::extract_tar_zst(source, target, "fuzz share");
  } catch (const ks::Error&) {
  }
  for (const auto& e : fs::directory_iterator(root)) { // only the target is there
    if (e.path().filename() != "share") {
      std::abort();
    }
  }
  fs::remove_all(target);
  return 0;
}
