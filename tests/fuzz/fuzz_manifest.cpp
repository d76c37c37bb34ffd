// Fuzz target: the manifests a hostile source hands us. manifest.json as `load` and `inspect`
// take it from an archive: parsed, validated, and read by the parts that act on it (network,
// shares); and an OCI image manifest as a repository or registry serves it. A refusal must be
// ks::Error, which names what failed and carries its exit code: any other exception (a JSON
// type error, say) would reach the user as a cryptic line and exit 1, so it is a finding.
#include "snapshot/network.hpp"
#include "storage/manifest.hpp"
#include "storage/store/oci_layout.hpp"
#include "storage/store/oci_snapshot.hpp"
#include "tests/fuzz/fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ks::fuzz::setup();
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (!j.is_discarded()) {
    try {
      ks::validate_manifest(j);
      ks::NetworkInfo::from_json(j.value("network", nlohmann::json()));
    } catch (const ks::Error&) {
    }
  }
  try {
    ks::Descriptor d{ks::k_oci_manifest_type, "sha256:" + std::string(64, '0'), size,
                     nlohmann::json::object()};
    ks::OciSnapshot s = ks::parse_snapshot(d, std::as_bytes(std::span(data, size)), "fuzz");
    s.size();
  } catch (const ks::Error&) {
  }
  return 0;
}
