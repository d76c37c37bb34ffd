// Fuzz target: manifest.json as `load` and `inspect` take it from a hostile archive: parsed,
// validated, and read by the parts that act on it (network, shares).
#include "snapshot/network.hpp"
#include "storage/manifest.hpp"
#include "tests/fuzz/fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ks::fuzz::setup();
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) {
    return 0;
  }
  try {
    ks::validate_manifest(j);
    ks::NetworkInfo::from_json(j.value("network", nlohmann::json()));
  } catch (const std::exception&) {
  }
  return 0;
}
