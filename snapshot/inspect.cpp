#include "snapshot/inspect.hpp"

#include "snapshot/host_check.hpp"
#include "storage/archive_reader.hpp"
#include "storage/store/store.hpp"
#include "storage/vmstate_channels.hpp"
#include "storage/vmstate_stream.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/signature.hpp"

#include <fcntl.h>
#include <optional>
#include <thread>
#include <unistd.h>

namespace ks {

nlohmann::json read_manifest(const std::string& archive, const RegistryOptions& registry) {
  return open_snapshot(archive, registry)->manifest();
}

namespace {

// A container checkpoint: every member streamed through its hash (images can be large), the
// index checked, and the signature.
nlohmann::json verify_container(ArchiveReader& reader, const std::string& archive,
                                const std::optional<VerifyKey>& verify_key) {
  uint64_t members = 0;
  uint64_t bytes = 0;
  for (;;) {
    if (reader.next_if("")) {
      bytes += reader.open_entry().size;
      reader.stream_member([](const ArchiveReader::Source&) {});
      ++members;
      continue;
    }
    auto m = reader.next();
    if (!m) {
      break;
    }
    reader.check_member(*m);
    bytes += m->data.size();
    ++members;
  }
  const std::string& signature = reader.index_signature();
  if (verify_key) {
    verify_key->check(signature, reader.index_text(), reader.what());
  }
  return {{"ok", true},
          {"archive", archive},
          {"kind", k_kind_container},
          {"container", reader.manifest()["container"].value("id", "")},
          {"members", members},
          {"member_bytes", bytes},
          {"encryption", {{"encrypted", false}, {"opened", false}}},
          {"signature",
           {{"signed", !signature.empty()},
            {"key_id", signature_key_id(signature)},
            {"checked", verify_key.has_value()}}}};
}

} // namespace

nlohmann::json verify_archive(const std::string& archive, bool host, unsigned threads,
                              const RegistryOptions& registry, const std::string& key,
                              const std::string& decrypt_key) {
  std::optional<VerifyKey> verify_key;
  if (!key.empty()) {
    verify_key = VerifyKey::load(key); // a bad key file fails before the archive is read
  }
  std::optional<DecryptKey> opener_key;
  if (!decrypt_key.empty()) {
    opener_key = DecryptKey::load(decrypt_key);
  }
  std::unique_ptr<ArchiveReader> opened = open_snapshot(archive, registry);
  ArchiveReader& reader = *opened;
  if (opener_key) {
    reader.unlock(*opener_key);
  }
  uint64_t other_members = 0;
  if (manifest_kind(reader.manifest()) == k_kind_container) {
    return verify_container(reader, archive, verify_key);
  }
  StreamOptions so{.chunk_size = reader.manifest()["vmstate"].value("chunk_size", size_t{8} << 20),
                   .threads = threads ? threads : std::max(1u, std::thread::hardware_concurrency())};
  auto other = [&](ArchiveReader::Member&& m) {
    reader.check_member(m);
    ++other_members;
  };
  const Json& vmstate = reader.manifest()["vmstate"];
  if (vmstate.value("layout", "") == "shared-ram") { // the device state follows the memory
    so.header_chunk = shared_ram_bytes(vmstate) / so.chunk_size;
  }
  StreamStats stats;
  if (reader.encrypted() && !reader.opener()) { // sealed: hashes and the index only
    while (auto m = reader.next()) {
      reader.check_member(*m);
      if (vmstate_series(m->name)) {
        ++stats.chunks;
      } else {
        ++other_members;
      }
    }
  } else if (vmstate.value("layout", "") == "multifd") {
    stats = read_vmstate_channels(reader, vmstate.at("channels").get<unsigned>(), {}, so, other);
  } else {
    stats = read_vmstate(reader, -1, so, other, check_qemu_stream_header);
  }

  nlohmann::json out = {{"ok", true},
                        {"archive", archive},
                        {"vmstate_chunks", stats.chunks},
                        {"vmstate_bytes", stats.raw_bytes},
                        {"other_members", other_members}};
  const std::string& signature = reader.index_signature();
  if (verify_key) {
    verify_key->check(signature, reader.index_text(), reader.what());
  }
  if (reader.encrypted()) {
    out["vmstate_bytes"] = reader.opener() ? Json(stats.raw_bytes) : Json();
  }
  out["encryption"] = {{"encrypted", reader.encrypted()}, {"opened", reader.opener() != nullptr}};
  out["signature"] = {{"signed", !signature.empty()},
                      {"key_id", signature_key_id(signature)},
                      {"checked", verify_key.has_value()}};
  if (host) {
    HostCheck c = check_host(reader.manifest(), "");
    out["host"] = c.to_json();
    out["ok"] = c.problems.empty();
  }
  return out;
}

} // namespace ks
