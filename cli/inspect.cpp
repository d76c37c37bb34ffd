// kata-snapshot inspect ARCHIVE [--json] / verify ARCHIVE [--json] [--host]
#include "snapshot/inspect.hpp"
#include "cli/common.hpp"
#include "snapshot/host_check.hpp"
#include "util/error.hpp"
#include "util/strings.hpp"

namespace ks::cli {

namespace {

std::string labels(const nlohmann::json& m) {
  std::string s;
  if (m.contains("labels") && m["labels"].is_object()) {
    for (const auto& [k, v] : m["labels"].items()) {
      s += "label:    " + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump()) + "\n";
    }
  }
  return s;
}

std::string describe(const nlohmann::json& m) {
  std::string s;
  s += "format:   " + m.value("format", "") + " v" + std::to_string(m.value("format_version", 0)) + "\n";
  s += "created:  " + m.value("created", "") + " on " + m["host"].value("hostname", "?") +
       " by kata-snapshot " + m.value("tool_version", "") + "\n";
  if (manifest_kind(m) == k_kind_container) {
    const nlohmann::json& c = m["container"];
    s += "kind:     container checkpoint (CRIU), restored with load --into\n";
    s += "container: " + c.value("id", "") + ", " + c.value("state", "running") + " when checkpointed\n";
    s += "images:   " + std::to_string(c.value("images", 0u)) + " files, " +
         human_size(c.value("image_bytes", uint64_t{0})) + "\n";
    if (const auto& kata = m.value("kata", nlohmann::json()); kata.is_object()) {
      s += "sandbox:  " + kata.value("sandbox", "") + "\n";
    }
    return s + labels(m);
  }
  s += "qemu:     " + m["qemu"].value("version", "") + ", machine " + m["qemu"].value("machine", "") + "\n";
  s += "memory:   " + human_size(m["vm"].value("ram_bytes", 0ull)) + "\n";
  const nlohmann::json& vmstate = m["vmstate"];
  s += "vmstate:  " + vmstate.value("layout", "stream") + " layout" +
       (vmstate.contains("channels")
          ? " (" + std::to_string(vmstate.value("channels", 0u)) + " multifd channels)"
          : std::string()) +
       ", zstd level " +

       std::to_string(vmstate.value("level", 1)) + ", chunks of " +
       human_size(vmstate.value("chunk_size", uint64_t{8} << 20)) + "\n";
  for (const auto& block : vmstate.value("memory", nlohmann::json::array())) { // shared-ram
    s += "          memory block " + block.value("id", "") + ": " + human_size(block.value("bytes", 0ull)) +
         ", read in place\n";
  }

  s += "mode:     " + m.value("mode", "") + ", quiesce " + m["quiesce"].value("method", "none") + "\n";
  const nlohmann::json none = nlohmann::json::array();
  const nlohmann::json& shares = m.contains("shares") ? m["shares"] : none;
  const nlohmann::json& devices = m.contains("devices_added") ? m["devices_added"] : none;
  for (const auto& sh : shares) {
    s += "share:    " + sh.value("tag", "") + " <- " + sh.value("source_dir", "") + " (" +
         sh.value("capture", "") + ")\n";
  }
  for (const auto& d : devices) {
    s += "device:   " + d.value("execute", "") + " " + d.value("arguments", nlohmann::json::object()).dump() +
         "\n";
  }
  if (const auto& enc = m.value("encryption", nlohmann::json()); enc.is_object()) {
    std::vector<std::string> to;
    for (const auto& r : enc.value("recipients", nlohmann::json::array())) {
      to.push_back(r.value("type", "?") + " key " + r.value("key_id", "").substr(0, 16));
    }
    s += "sealed:   " + enc.value("cipher", "?") + ", to " + join(to, ", ") +
         (enc.value("dedup", false) ? " (chunks deduplicated across its repository)" : "") + "\n";
  }
  return s + labels(m);
}

} // namespace

void add_inspect(CLI::App& app, Registry& reg) {
  struct Args {
    std::string archive;
    RegistryOptions registry;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("inspect", "Show an archive's manifest (reads only the manifest)");
  cmd->add_option("archive", a->archive, k_snapshot_help)->required();
  add_registry_options(*cmd, a->registry);
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg, a] {
    reg.action = [&reg, a] {
      nlohmann::json m = read_manifest(a->archive, a->registry);
      print_result(reg.global, m, describe(m));
      return 0;
    };
  });
}

void add_verify(CLI::App& app, Registry& reg) {
  struct Args {
    std::string archive;
    bool host = false;
    std::string key;
    std::string decrypt_key;
    RegistryOptions registry;
  };
  auto a = std::make_shared<Args>();
  auto* cmd =
    app.add_subcommand("verify", "Check every byte of an archive (hashes, index, QEMU stream header)");
  cmd->add_option("archive", a->archive, k_snapshot_help)->required();
  add_registry_options(*cmd, a->registry);
  cmd->add_flag("--host", a->host, "Also check that this host can load it, and say why not");
  cmd->add_option("--key", a->key, "Require a signature by this Ed25519 public key (PEM); exit 3 without it");
  cmd->add_option("--decrypt-key", a->decrypt_key,
                  "An encrypted snapshot: open every member with this X25519 private key (PEM) or key file "
                  "(without it, only the sealed bytes' hashes and the index are checked)");
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg, a] {
    reg.action = [&reg, a] {
      nlohmann::json r = verify_archive(a->archive, a->host, 0, a->registry, a->key, a->decrypt_key);
      bool container = r.value("kind", "") == k_kind_container;
      std::string human = container
                            ? a->archive + ": intact (container " + r.value("container", "") +
                                " checkpoint, " + std::to_string(r.value("members", 0)) + " members, " +
                                human_size(r.value("member_bytes", uint64_t{0})) + ")"
                            : a->archive + ": intact (" +
                                std::to_string(r["vmstate_chunks"].get<uint64_t>()) + " chunks" +
                                (r["vmstate_bytes"].is_null()
                                   ? std::string(", sealed: contents not checked without --decrypt-key)")
                                   : ", " + human_size(r["vmstate_bytes"].get<uint64_t>()) + " of VM state)");
      if (r["encryption"]["opened"].get<bool>()) {
        human += ", encrypted, every seal checked";
      }
      const auto& sig = r["signature"];
      if (sig["signed"].get<bool>()) {
        human += std::string(sig["checked"].get<bool>() ? ", signed by key "
                                                        : ", signed (not checked: --key) by key ") +
                 sig["key_id"].get<std::string>().substr(0, 16);
      }
      if (a->host && container) {
        human += "\n(a container checkpoint needs no QEMU: load --into checks the target VM)";
      } else if (a->host) {
        const auto& h = r["host"];
        human += h["loadable"].get<bool>()
                   ? "\nloadable here with " + h.value("qemu", "") + " " + h.value("qemu_version", "")
                   : "\nNOT loadable here: " + join(h["problems"].get<std::vector<std::string>>(), "; ");
      }
      print_result(reg.global, r, human);
      return r["ok"].get<bool>() ? 0 : static_cast<int>(ExitCode::archive_invalid);
    };
  });
}

} // namespace ks::cli
