// Encrypted archives (storage/sealing.hpp): a round trip through the vmstate pipeline, the
// share path and small members, with a key file and with X25519 keys; and every way a
// sealed archive can be wrong: a wrong key, a member from another snapshot, a member moved,
// cut or altered, an altered manifest or index, a plain archive offered as encrypted.
#include "storage/archive_reader.hpp"
#include "storage/archive_writer.hpp"
#include "storage/sealing.hpp"
#include "storage/store/store.hpp"
#include "storage/tar.hpp"
#include "storage/vmstate_stream.hpp"
#include "tests/support/archive_edit.hpp"
#include "tests/support/fake_qmp.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/sha256.hpp"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fcntl.h>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

using namespace ks;
using ks::test::TempDir;

namespace {

Bytes random_bytes(size_t size, unsigned seed) {
  Bytes b(size);
  std::mt19937 rng(seed);
  for (size_t i = 0; i < size; ++i) {
    b[i] = (i / 8192) % 2 ? std::byte(rng() & 0xff) : std::byte('a' + i % 5);
  }
  const unsigned char header[] = {'Q', 'E', 'V', 'M', 0, 0, 0, 3};
  for (size_t i = 0; i < 8 && i < size; ++i) {
    b[i] = std::byte(header[i]);
  }
  return b;
}

std::string key_file(const TempDir& dir, const std::string& name, char fill) {
  std::string path = dir / name;
  Fd f = open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  write_all(f.get(), std::string(40, fill), path);
  return path;
}

// An X25519 key pair made by openssl(1), as an operator would: (private, public) paths.
std::pair<std::string, std::string> x25519_pair(const TempDir& dir, const std::string& name) {
  std::string priv = dir / (name + ".pem");
  std::string pub = dir / (name + ".pub");
  std::string cmd = "openssl genpkey -algorithm x25519 -out " + priv + " 2>/dev/null && openssl pkey -in " +
                    priv + " -pubout -out " + pub + " 2>/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  return {priv, pub};
}

struct Written {
  std::string path;
  Bytes stream;
  Bytes share;
  std::string removed;
};

// An encrypted archive: STREAM in 64 KiB chunks, a share member from a file (3 MiB: several
// blocks of the in-place seal), a small member sealed by the writer.
Written write_sealed(const TempDir& dir, const std::string& name, const EncryptionOptions& enc,
                     unsigned seed) {
  Written w{dir / name, random_bytes(300000, seed), random_bytes(3u << 20, seed + 1), "{\"removed\": []}"};
  auto sealer = Sealer::create(enc, false);
  Json manifest = {{"format", k_format_name},
                   {"format_version", k_format_version_encrypted},
                   {"qemu", {{"argv", {"qemu-system-x86_64"}}}},
                   {"vmstate", {{"chunk_size", 65536}}},
                   {"encryption", sealer->header()}};
  std::string raw = dir / (name + ".raw");
  {
    Fd f = open_file(raw, O_WRONLY | O_CREAT | O_TRUNC);
    write_all(f.get(), w.stream, raw);
  }
  Fd out = open_file(w.path, O_WRONLY | O_CREAT | O_TRUNC);
  ArchiveWriter aw(std::make_unique<TarWriter>(out.get(), w.path),
                   ArchiveWriter::ManifestText{manifest.dump(2) + "\n", sealer});
  Fd share = Fd(::open(dir.path().c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  write_all(share.get(), w.share, "share");
  aw.add_member_from_fd("shares/t.tar.zst", share.get(), w.share.size(), sha256_hex(w.share));
  aw.add_member("shares/t.removed.json", std::as_bytes(std::span(w.removed)), sha256_hex(w.removed));
  Fd in = open_file(raw, O_RDONLY);
  write_vmstate(in.get(), aw, {.chunk_size = 65536, .level = 1, .threads = 2});
  aw.finish();
  return w;
}

// Reads W back with KEY: the share streamed, the small member, the vmstate.
void read_sealed(const Written& w, const DecryptKey& key) {
  Fd in = open_file(w.path, O_RDONLY);
  ArchiveReader r(in.get(), w.path);
  REQUIRE(r.encrypted());
  r.unlock(key);
  REQUIRE(r.next_if("shares/") == std::optional<std::string>("shares/t.tar.zst"));
  Bytes share;
  r.stream_member([&](const ArchiveReader::Source& source) {
    std::vector<std::byte> buf(70000);
    while (size_t n = source(buf)) {
      share.insert(share.end(), buf.begin(), buf.begin() + static_cast<long>(n));
    }
  });
  CHECK(share == w.share);
  auto removed = r.next();
  REQUIRE(removed);
  r.check_member(*removed);
  CHECK(std::string(reinterpret_cast<const char*>(removed->data.data()), removed->data.size()) == w.removed);
  std::string out_path = w.path + ".out";
  Fd out = open_file(out_path, O_WRONLY | O_CREAT | O_TRUNC);
  read_vmstate(r, out.get(), {.chunk_size = 65536, .threads = 2}, [](ArchiveReader::Member&&) {}, {});
  CHECK(read_file(out_path) == std::string(reinterpret_cast<const char*>(w.stream.data()), w.stream.size()));
}

// Reading PATH through with KEY (the pre-QEMU header check, then the members) fails with
// exit 3 and a message containing WHAT.
void check_refused(const std::string& path, const DecryptKey& key, const std::string& what) {
  try {
    std::unique_ptr<ArchiveReader> r = open_snapshot(path);
    r->unlock(key);
    check_sealed_headers(peek_index(path, "seals are checked"), *r);
    FAIL("the headers of " + path + " passed");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::archive_invalid);
    CHECK_THAT(e.what(), Catch::Contains(what));
  }
}

} // namespace

TEST_CASE("an encrypted archive round-trips with a key file and with X25519 keys") {
  TempDir dir;
  std::string k = key_file(dir, "k", 'k');
  auto [priv, pub] = x25519_pair(dir, "ops");
  Written w = write_sealed(dir, "a.ksnap", {.recipients = {pub}, .key_files = {k}}, 1);
  read_sealed(w, DecryptKey::load(k));
  read_sealed(w, DecryptKey::load(priv));
  // The whole header checks pass, before any member is read.
  std::unique_ptr<ArchiveReader> r = open_snapshot(w.path);
  r->unlock(DecryptKey::load(priv));
  check_sealed_headers(peek_index(w.path, "seals are checked"), *r);

  // Without a key: the hashes and the index check, the data stays sealed.
  Fd in = open_file(w.path, O_RDONLY);
  ArchiveReader plain(in.get(), w.path);
  size_t n = 0;
  while (auto m = plain.next_if("")) {
    plain.stream_member([](const ArchiveReader::Source&) {});
    ++n;
  }
  CHECK(n > 4);
  // Nothing of the share's plaintext is in the file.
  std::string file = read_file(w.path);
  CHECK(file.find(std::string(reinterpret_cast<const char*>(w.share.data()) + 8192, 64)) ==
        std::string::npos);
}

TEST_CASE("a wrong key, a public key or a plain archive are refused") {
  TempDir dir;
  std::string k = key_file(dir, "k", 'k');
  std::string other = key_file(dir, "other", 'o');
  auto [priv, pub] = x25519_pair(dir, "ops");
  Written w = write_sealed(dir, "a.ksnap", {.key_files = {k}}, 2);
  Fd in = open_file(w.path, O_RDONLY);
  ArchiveReader r(in.get(), w.path);
  try {
    r.unlock(DecryptKey::load(other));
    FAIL("a wrong key opened it");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    CHECK_THAT(e.what(), Catch::Contains("is encrypted to key"));
  }
  try {
    r.unlock(DecryptKey::load(priv));
    FAIL("a wrong X25519 key opened it");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
  }
  CHECK_THROWS_WITH(DecryptKey::load(pub), Catch::Contains("not an X25519 private key"));
  std::string shortkey = dir / "short";
  write_all(open_file(shortkey, O_WRONLY | O_CREAT, 0600).get(), std::string("tooshort\n"), shortkey);
  CHECK_THROWS_WITH(DecryptKey::load(shortkey), Catch::Contains("fewer than 32"));

  // A plain archive where an encrypted one was expected: refused, not trusted.
  std::vector<test::RawMember> ms = test::read_members(w.path);
  Json manifest = Json::parse(ms[0].data);
  manifest.erase("encryption");
  std::string plain_path = dir / "plain.ksnap";
  {
    Fd out = open_file(plain_path, O_WRONLY | O_CREAT | O_TRUNC);
    ArchiveWriter aw(out.get(), plain_path, manifest);
    aw.finish();
  }
  Fd pin = open_file(plain_path, O_RDONLY);
  ArchiveReader pr(pin.get(), plain_path);
  CHECK_THROWS_WITH(pr.unlock(DecryptKey::load(k)), Catch::Contains("is not encrypted"));
}

TEST_CASE("a sealed member swapped, moved, cut or altered is refused before any data is used") {
  TempDir dir;
  std::string k = key_file(dir, "k", 'k');
  DecryptKey key = DecryptKey::load(k);
  Written a = write_sealed(dir, "a.ksnap", {.key_files = {k}}, 3);
  Written b = write_sealed(dir, "b.ksnap", {.key_files = {k}}, 4);
  std::vector<test::RawMember> ma = test::read_members(a.path);
  std::vector<test::RawMember> mb = test::read_members(b.path);
  REQUIRE(ma.size() == mb.size());
  size_t chunk = 3; // manifest, share, removed list, then the first vmstate chunk
  REQUIRE(ma[chunk].entry.name == "vmstate/000000.zst");
  std::string bad = dir / "bad.ksnap";

  SECTION("a member of another snapshot of the same key") {
    auto m = ma;
    m[chunk + 1] = mb[chunk + 1];
    test::write_members(bad, m);
    check_refused(bad, key, "is not the one index.json lists");
  }
  SECTION("the same, with the index's hashes recomputed") {
    auto m = ma;
    m[chunk + 1] = mb[chunk + 1];
    Json index = Json::parse(m.back().data);
    index["members"][chunk + 1]["sha256"] = m[chunk + 1].entry.attrs[k_sha256_attr];
    index["members"][chunk + 1]["size"] = m[chunk + 1].data.size();
    m.back().data = index.dump(2) + "\n";
    m.back().entry.attrs[k_sha256_attr] = sha256_hex(m.back().data);
    test::write_members(bad, m);
    check_refused(bad, key, "index.json was altered");
  }
  SECTION("two members exchanged, hashes and index recomputed but for the MAC") {
    auto m = ma;
    std::swap(m[chunk].data, m[chunk + 1].data);
    std::swap(m[chunk].entry.attrs, m[chunk + 1].entry.attrs);
    test::write_members(bad, m);
    check_refused(bad, key, "is not the one index.json lists");
  }
  SECTION("a member cut short, its hash recomputed") {
    auto m = ma;
    m[chunk].data.resize(m[chunk].data.size() - 100);
    m[chunk].entry.attrs[k_sha256_attr] = sha256_hex(m[chunk].data);
    test::write_members(bad, m);
    check_refused(bad, key, "is not the one index.json lists");
  }
  SECTION("the archive cut in the middle") {
    std::string file = read_file(a.path);
    Fd out = open_file(bad, O_WRONLY | O_CREAT | O_TRUNC);
    write_all(out.get(), file.substr(0, file.size() / 2), bad);
    CHECK_THROWS_WITH(peek_index(bad, "seals are checked"), Catch::Contains("damaged"));
  }
  SECTION("a manifest changed, its hash recomputed") {
    auto m = ma;
    Json manifest = Json::parse(m[0].data);
    manifest["qemu"]["argv"] = {"/bin/sh", "-c", "evil"};
    m[0].data = manifest.dump(2) + "\n";
    m[0].entry.attrs[k_sha256_attr] = sha256_hex(m[0].data);
    test::write_members(bad, m);
    Fd in = open_file(bad, O_RDONLY);
    ArchiveReader r(in.get(), bad);
    CHECK_THROWS_WITH(r.unlock(key), Catch::Contains("manifest.json was altered"));
  }
  SECTION("a member's data altered in place, its hash recomputed everywhere but the MAC") {
    auto m = ma;
    m[chunk].data[40] ^= 1;
    m[chunk].entry.attrs[k_sha256_attr] = sha256_hex(m[chunk].data);
    test::write_members(bad, m);
    check_refused(bad, key, "is not the one index.json lists");
    // And read as a stream (from a pipe, no header pass): its seal fails when it arrives.
    Fd in = open_file(bad, O_RDONLY);
    ArchiveReader r(in.get(), bad);
    r.unlock(key);
    r.next_if("shares/");
    r.stream_member([](const ArchiveReader::Source&) {});
    auto removed = r.next();
    r.check_member(*removed);
    auto c = r.next();
    CHECK_THROWS_WITH(r.check_member(*c), Catch::Contains("does not belong at position"));
  }
}
