// Encryption at rest (storage/sealing.hpp) on real guests: an encrypted save and load of a
// virtio-fs guest that carries on; a wrong key, no key, a member swapped in from another
// encrypted snapshot, a truncated member and a plain archive offered instead, each refused
// before QEMU starts; and encrypted snapshots in a repository, which share unchanged chunks
// and keep their seals through a copy.
#include "storage/manifest.hpp"
#include "tests/e2e/snapshot_steps.hpp"
#include "tests/support/archive_edit.hpp"
#include "util/fd.hpp"
#include "util/sha256.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <regex>

using namespace ks;
using namespace ks::test;
namespace fs = std::filesystem;

namespace {

// An X25519 key pair made as an operator would: (private, public) paths.
std::pair<std::string, std::string> x25519_pair(const std::string& dir, const std::string& name) {
  std::string priv = dir + "/" + name + ".pem";
  std::string pub = dir + "/" + name + ".pub";
  REQUIRE(run_command({"openssl", "genpkey", "-algorithm", "x25519", "-out", priv}).status == 0);
  REQUIRE(run_command({"openssl", "pkey", "-in", priv, "-pubout", "-out", pub}).status == 0);
  return {priv, pub};
}

std::string key_file(const std::string& dir, const std::string& name) {
  std::string path = dir + "/" + name;
  REQUIRE(run_command({"openssl", "rand", "-hex", "-out", path, "32"}).status == 0);
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
  return path;
}

// The load of SNAPSHOT with ARGS is refused with exit CODE and WHY, before anything started.
void refused(const std::string& snapshot, const std::string& run_dir, const std::vector<std::string>& args,
             int code, const std::string& why) {
  std::vector<std::string> argv = {"load", snapshot, "--run-dir", run_dir};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = run_cli(argv);
  INFO(snapshot << ": " << r.error_output);
  CHECK(r.status == code);
  CHECK_THAT(r.error_output, Catch::StartsWith("kata-snapshot: error: ") && Catch::Contains(why));
  CHECK_FALSE(fs::exists(run_dir)); // refused before QEMU, virtiofsd or the run directory
}

// A member's header hash and its index.json entry made to match its (altered) data, as an
// attacker without the key can: only the MAC, which needs the key, stays behind.
void rehash(std::vector<RawMember>& ms, size_t i) {
  ms[i].entry.attrs[k_sha256_attr] = sha256_hex(ms[i].data);
  Json index = Json::parse(ms.back().data);
  index["members"][i]["sha256"] = sha256_hex(ms[i].data);
  index["members"][i]["size"] = ms[i].data.size();
  ms.back().data = index.dump(2) + "\n";
  ms.back().entry.attrs[k_sha256_attr] = sha256_hex(ms.back().data);
}

size_t member_index(const std::vector<RawMember>& ms, const std::string& name) {
  for (size_t i = 0; i < ms.size(); ++i) {
    if (ms[i].entry.name == name) {
      return i;
    }
  }
  FAIL("no member " + name);
  return 0;
}

} // namespace

TEST_CASE("an encrypted snapshot of a virtio-fs guest loads with its key, and no key, a wrong key, "
          "a swapped or truncated member are refused before QEMU starts") {
  const std::string marker = "kata-snapshot secret marker 7f3a9c1e in the share";
  GuestOptions o = vfs_guest();
  o.share_files["secret.txt"] = marker + "\n";
  GuestVm vm(o);
  auto [priv, pub] = x25519_pair(vm.dir(), "ops");
  const std::string other = key_file(vm.dir(), "other.key");
  const std::string virtiofsd = test_env().virtiofsd;

  // Another snapshot to the same recipient first, a live one (its share's base and delta are
  // sealed too; its members are swapped in below), then the one loaded, left paused so that
  // the guest's console is the restored guest's after it.
  const std::string earlier = vm.dir() + "/earlier.ksnap";
  vm.wait_console("ksnap: appended 3\n");
  save_paused(vm.qmp_path(), earlier, {"--encrypt-recipient", pub, "--mode", "live"});
  vm.qmp().execute("cont");
  CommandResult live = run_cli({"verify", earlier, "--decrypt-key", priv, "--json"});
  INFO(live.error_output);
  CHECK(live.status == 0);
  CHECK(Json::parse(read_members(earlier)[0].data)["mode"] == "live");
  const std::string archive = vm.dir() + "/vm.ksnap";
  VfsMark m = save_vfs(vm, archive, {"--encrypt-recipient", pub});
  vm.kill();

  // Nothing readable in the file; the manifest says to whom it is sealed, without a key.
  CHECK(read_file(archive).find(marker) == std::string::npos);
  CommandResult inspect = run_cli({"inspect", archive});
  CHECK(inspect.status == 0);
  CHECK_THAT(inspect.output, Catch::Contains("sealed:   aes-256-gcm, to x25519 key"));
  CommandResult sealed = run_cli({"verify", archive});
  INFO(sealed.error_output);
  CHECK(sealed.status == 0);
  CHECK_THAT(sealed.output, Catch::Contains("sealed: contents not checked"));
  CommandResult opened = run_cli({"verify", archive, "--decrypt-key", priv});
  INFO(opened.error_output);
  CHECK(opened.status == 0);
  CHECK_THAT(opened.output, Catch::Contains("every seal checked"));

  const std::string run_dir = vm.dir() + "/run";
  refused(archive, run_dir, {}, 2, "is encrypted");
  refused(archive, run_dir, {"--decrypt-key", other}, 2, "is encrypted to key");
  std::vector<RawMember> ms = read_members(archive);
  std::vector<RawMember> theirs = read_members(earlier);
  {
    auto swapped = ms; // a vmstate chunk of the other snapshot, header and all, hashes recomputed
    size_t i = member_index(swapped, "vmstate/000001.zst");
    swapped[i] = theirs[member_index(theirs, "vmstate/000001.zst")];
    rehash(swapped, i);
    write_members(vm.dir() + "/swapped.ksnap", swapped);
    refused(vm.dir() + "/swapped.ksnap", run_dir, {"--decrypt-key", priv}, 3, "index.json was altered");
  }
  {
    auto cut = ms; // the share's capture cut short, hashes recomputed
    size_t i = member_index(cut, "shares/kataShared.tar.zst");
    cut[i].data.resize(cut[i].data.size() / 2);
    rehash(cut, i);
    write_members(vm.dir() + "/cut.ksnap", cut);
    refused(vm.dir() + "/cut.ksnap", run_dir, {"--decrypt-key", priv}, 3, "index.json was altered");
  }
  {
    auto unsealed = ms; // the encryption header removed: a plain snapshot in its place
    Json manifest = Json::parse(unsealed[0].data);
    manifest.erase("encryption");
    unsealed[0].data = manifest.dump(2) + "\n";
    unsealed[0].entry.attrs.erase(k_mac_attr);
    rehash(unsealed, 0);
    Json index = Json::parse(unsealed.back().data);
    index["manifest_sha256"] = sha256_hex(unsealed[0].data);
    unsealed.back().data = index.dump(2) + "\n";
    unsealed.back().entry.attrs[k_sha256_attr] = sha256_hex(unsealed.back().data);
    write_members(vm.dir() + "/unsealed.ksnap", unsealed);
    refused(vm.dir() + "/unsealed.ksnap", run_dir, {"--decrypt-key", priv}, 3, "is not encrypted");
  }

  fs::remove_all(vm.share_dir());
  fs::create_directories(vm.share_dir());
  RestoredVm restored = load_ok(archive, run_dir, {"--decrypt-key", priv, "--virtiofsd", virtiofsd});
  require_vfs_continues(vm, m, vm.share_dir());
  CHECK(read_file(vm.share_dir() + "/secret.txt") == marker + "\n");
}

TEST_CASE("encrypted snapshots in a repository share unchanged chunks, and keep their seals through a copy") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  const std::string key = key_file(vm.dir(), "backup.key");
  const std::string other = key_file(vm.dir(), "other.key");
  const std::string repo = "oci:" + vm.dir() + "/repo";
  auto save = [&](const std::string& tag, const std::string& k) {
    return save_paused(vm.qmp_path(), repo + ":" + tag, {"--encrypt-key-file", k});
  };
  Json first = save("one", key);
  vm.qmp().execute("cont");
  Json other_key = save("other", other);
  vm.qmp().execute("cont");
  vm.wait_console("ksnap: tick " + std::to_string(vm.last_tick() + 1));
  Json second = save("two", key);
  Mark mk = mark(vm);
  vm.kill();
  // The second snapshot to the same key reuses most of the first's sealed chunks; none of a
  // snapshot to another key can be reused.
  INFO(first.dump() << "\n" << second.dump() << "\n" << other_key.dump());
  CHECK(second["stored_bytes"].get<uint64_t>() > second["archive_bytes"].get<uint64_t>() / 2);
  CHECK(other_key["stored_bytes"].get<uint64_t>() == 0);
  // The lookup tags a repository keeps are keyed: no plain hash of guest memory in it.
  for (const auto& e : fs::recursive_directory_iterator(vm.dir() + "/repo/blobs")) {
    if (e.is_regular_file() && e.file_size() < (1u << 20)) {
      std::string text = read_file(e.path());
      CHECK_FALSE(
        std::regex_search(text, std::regex(R"re("io\.kata-snapshot\.raw-(blake3|sha256)": "[0-9a-f])re")));
    }
  }
  CHECK(run_cli({"check", repo, "--read-data"}).status == 0);

  const std::string copied = vm.dir() + "/two.ksnap";
  CommandResult copy = run_cli({"copy", repo + ":two", copied});
  INFO(copy.error_output);
  REQUIRE(copy.status == 0);
  CHECK(run_cli({"verify", copied, "--decrypt-key", key}).status == 0);
  refused(repo + ":two", vm.dir() + "/run", {"--decrypt-key", other}, 2, "is encrypted to key");
  RestoredVm restored = load_ok(copied, vm.dir() + "/run", {"--decrypt-key", key});
  require_continues(vm, mk);
}
