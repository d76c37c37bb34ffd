// An OCI image layout as a snapshot repository, with small synthetic snapshots: the
// mapping, reuse of stored chunks, prune + gc + check, and hostile repositories.
#include "storage/store/oci_layout.hpp"
#include "storage/store/oci_snapshot.hpp"
#include "storage/store/repository.hpp"
#include "storage/store/store.hpp"
#include "tests/support/fake_qmp.hpp"
#include "util/blake3.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/sha256.hpp"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <filesystem>
#include <sys/stat.h>
#include <thread>

using namespace ks;
using ks::test::TempDir;

namespace {

Bytes bytes_of(const std::string& s) {
  Bytes b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

// A snapshot of two vmstate chunks (PAYLOADS) into REF, taken at CREATED; its result. RAW_KEY
// gives a chunk's lookup key (a save's: BLAKE3 of its bytes).
Json put_snapshot(const std::string& ref, const std::string& created,
                  const std::vector<std::string>& payloads, const Json& labels = Json::object(),
                  std::string (*raw_key_of)(std::span<const std::byte>) = blake3_hex) {
  std::unique_ptr<SnapshotOutput> out = SnapshotOutput::open(ref, {});
  Json m = {{"format", k_format_name},
            {"format_version", 2},
            {"created", created},
            {"labels", labels},
            {"qemu", {{"argv", {"qemu-system-x86_64"}}}},
            {"vmstate", {{"chunk_size", 65536}, {"layout", "mapped-ram"}}}};
  ArchiveWriter& w = out->start(m);
  uint64_t n = 0;
  for (const auto& p : payloads) {
    Bytes raw = bytes_of(p);
    std::string raw_key = raw_key_of(raw);
    std::string name = vmstate_member_name(n++);
    if (auto stored = w.find_raw(raw_key)) {
      w.add_stored(name, *stored, raw_key);
      continue;
    }
    Bytes frame;
    zstd_compress(raw, 1, frame);
    w.add_member(name, frame, sha256_hex(frame), raw_key);
  }
  w.finish();
  out->commit();
  Json r = out->describe();
  r["stored"] = w.bytes_stored();
  return r;
}

std::string text(const std::string& path) {
  return read_file(path);
}

void write_text(const std::string& path, const std::string& s) {
  std::filesystem::permissions(path, std::filesystem::perms::owner_write, std::filesystem::perm_options::add);
  Fd f = open_file(path, O_WRONLY | O_TRUNC);
  write_all(f.get(), s, path);
}

ExitCode code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return ExitCode::ok;
}

} // namespace

TEST_CASE("repository: a snapshot is an OCI image manifest whose layers are the archive's members") {
  TempDir t;
  std::string ref = "oci:" + t / "repo";
  Json r = put_snapshot(ref + ":one", "2026-11-27T02:00:00Z", {"aaaa", "bbbb"}, {{"env", "prod"}});
  CHECK(r["tag"] == "one");
  CHECK(text(t / "repo/oci-layout") == "{\"imageLayoutVersion\":\"1.0.0\"}\n");
  OciLayout layout(t / "repo", OciLayout::Create::no);
  OciSnapshot s = find_snapshot(layout, "one");
  CHECK(s.manifest.digest == r["digest"]);
  CHECK(s.config.media_type == k_config_type);
  REQUIRE(s.layers.size() == 3);
  CHECK(s.layers[0].annotation(k_title_annotation) == "vmstate/000000.zst");
  CHECK(s.layers[0].annotation(k_raw_annotation) == blake3_hex(bytes_of("aaaa")));
  CHECK(s.layers[2].annotation(k_title_annotation) == "index.json");
  CHECK(s.annotations["io.kata-snapshot.label.env"] == "prod");
  CHECK(s.created() == "2026-11-27T02:00:00Z");
  // Read back through the same reader as a .ksnap file: every member checked.
  std::unique_ptr<ArchiveReader> reader = open_snapshot(ref + ":one");
  int members = 0;
  while (auto m = reader->next()) {
    reader->check_member(*m);
    ++members;
  }
  CHECK(members == 2);
  CHECK(reader->index()["members"].size() == 3);
  // The same tag again is refused unless replaced.
  CHECK(code_of([&] { put_snapshot(ref + ":one", "2026-11-27T03:00:00Z", {"x"}); }) == ExitCode::failed);
}

TEST_CASE("repository: a manifest field of the wrong type is refused as damage, with exit 3") {
  // What a hostile repository or registry may serve; nlohmann's own type errors would reach
  // the user as a cryptic line and exit 1.
  Descriptor d{k_oci_manifest_type, "sha256:" + std::string(64, '0'), 0, Json::object()};
  for (const char* text : {R"({"schemaVersion": "2"})", R"({"schemaVersion": 2, "mediaType": 7})",
                           R"({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "artifactType": {}})"}) {
    std::string manifest = text;
    try {
      parse_snapshot(d, bytes_of(manifest), "oci:/r:t");
      FAIL("accepted: " << manifest);
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::archive_invalid);
      CHECK_THAT(e.what(), Catch::StartsWith("oci:/r:t ") && !Catch::Contains("json.exception"));
    }
  }
}

TEST_CASE("repository: a chunk stored before is found by its raw hash and not written again") {
  TempDir t;
  std::string ref = "oci:" + t / "repo";
  Json first = put_snapshot(ref + ":a", "2026-11-27T02:00:00Z", {"same", "old"});
  CHECK(first["stored"] == 0);
  Json second = put_snapshot(ref + ":b", "2026-11-27T03:00:00Z", {"same", "new"});
  OciLayout layout(t / "repo", OciLayout::Create::no);
  CHECK(second["stored"].get<uint64_t>() == find_snapshot(layout, "a").layers[0].size);
  Json list = list_snapshots(ref);
  REQUIRE(list.size() == 2);
  CHECK(list[1]["unique_size"].get<uint64_t>() < list[1]["size"].get<uint64_t>());
}

namespace {

// The chunk cache files of the repository in DIR (manifest hex names), sorted.
std::vector<std::string> cache_files(const std::string& dir) {
  std::vector<std::string> names = list_dir(dir + "/.kata-snapshot/chunks");
  std::ranges::sort(names);
  return names;
}

} // namespace

TEST_CASE("repository: each manifest's chunks are cached once, and a bad cache is never trusted") {
  TempDir t;
  std::string ref = "oci:" + t / "repo";
  put_snapshot(ref + ":a", "2026-11-27T02:00:00Z", {"one", "two"});
  put_snapshot(ref + ":b", "2026-11-27T03:00:00Z", {"one", "three"});
  OciLayout layout(t / "repo", OciLayout::Create::no);
  std::string a = find_snapshot(layout, "a").manifest.hex(), b = find_snapshot(layout, "b").manifest.hex();
  // Each save cached its own snapshot; what the index says is what the manifests say.
  std::vector<std::string> both = {a, b};
  std::ranges::sort(both);
  CHECK(cache_files(t / "repo") == both);
  RawIndex index = build_raw_index(layout);
  RawIndex parsed = build_raw_index(read_snapshots(layout), [](const StoredMember&) { return true; });
  CHECK(index == parsed);
  CHECK(index.size() == 3);
  CHECK(read_chunk_cache(layout, find_snapshot(layout, "b").manifest) ==
        snapshot_chunks(find_snapshot(layout, "b")));

  // A cache pointing "one" at another chunk's blob, its checksum not updated: ignored, and
  // written again from the manifest.
  std::string path = chunk_cache_dir(layout) + "/" + a;
  std::string good = read_file(path);
  std::string blob_one = index.at(blake3_hex(bytes_of("one"))).sha256;
  std::string blob_two = index.at(blake3_hex(bytes_of("two"))).sha256;
  std::string bad = good;
  bad.replace(bad.find(blob_one), blob_one.size(), blob_two);
  write_text(path, bad);
  CHECK_FALSE(read_chunk_cache(layout, find_snapshot(layout, "a").manifest));
  CHECK(build_raw_index(layout) == parsed);
  CHECK(read_file(path) == good);
  // Torn (cut short), empty, or a symlink: the same.
  for (const std::string& torn : {good.substr(0, good.size() / 2), std::string()}) {
    write_text(path, torn);
    CHECK_FALSE(read_chunk_cache(layout, find_snapshot(layout, "a").manifest));
    CHECK(build_raw_index(layout) == parsed);
  }
  std::filesystem::remove(path);
  std::filesystem::create_symlink(chunk_cache_dir(layout) + "/" + b, path);
  CHECK_FALSE(read_chunk_cache(layout, find_snapshot(layout, "a").manifest));
  CHECK(build_raw_index(layout) == parsed);

  // An encrypted snapshot's keys ("keyed:" + hex) are cached as well.
  put_snapshot(ref + ":k", "2026-11-27T04:00:00Z", {"four"}, Json::object(),
               [](std::span<const std::byte> d) { return "keyed:" + blake3_hex(d); });
  build_raw_index(layout);
  std::string k = find_snapshot(layout, "k").manifest.hex();
  REQUIRE(read_chunk_cache(layout, find_snapshot(layout, "k").manifest));
  CHECK(read_chunk_cache(layout, find_snapshot(layout, "k").manifest)->at(0).raw ==
        "keyed:" + blake3_hex(bytes_of("four")));

  // gc drops the cache of a snapshot that is gone, and keeps the others.
  prune_snapshots(ref, {.last = 2}, {}); // a goes
  gc_repository(ref, {});
  std::vector<std::string> kept = {b, k};
  std::ranges::sort(kept);
  CHECK(cache_files(t / "repo") == kept);
}

TEST_CASE("repository: prune keeps what the rules say, gc frees exactly the rest, check stays clean") {
  TempDir t;
  std::string ref = "oci:" + t / "repo";
  const char* times[] = {"2026-11-20T02:00:00Z", "2026-11-25T02:00:00Z", "2026-11-26T02:00:00Z",
                         "2026-11-26T14:00:00Z", "2026-11-27T02:00:00Z"};
  int i = 0;
  for (const char* when : times) {
    put_snapshot(ref + ":t" + std::to_string(i), when, {"shared", "own " + std::to_string(i)},
                 i == 0 ? Json{{"keep", "yes"}} : Json::object());
    ++i;
  }
  Json dry = prune_snapshots(ref, {.daily = 2}, {.dry_run = true});
  CHECK(dry["removed"].size() == 3);
  CHECK(list_snapshots(ref).size() == 5);
  Json pruned = prune_snapshots(ref, {.daily = 2, .tags = {"keep"}}, {});
  std::vector<std::string> left;
  for (const auto& s : list_snapshots(ref)) {
    left.push_back(s["tag"]);
  }
  CHECK(left == std::vector<std::string>{"t0", "t3", "t4"});
  auto blobs = [&] {
    return std::distance(std::filesystem::directory_iterator(t / "repo/blobs/sha256"), {});
  };
  auto before = blobs();
  Json gc = gc_repository(ref, {});
  // Two snapshots went: each its manifest, manifest.json, own chunk and index.json.
  CHECK(gc["removed"].size() == 8);
  CHECK(blobs() == before - 8);
  CHECK(check_repository(ref, true)["ok"] == true);
  CHECK(code_of([&] { prune_snapshots(ref, {}, {}); }) == ExitCode::usage);
}

TEST_CASE("repository: damage is found and named with the snapshots that need it") {
  TempDir t;
  std::string ref = "oci:" + t / "repo";
  put_snapshot(ref + ":a", "2026-11-27T02:00:00Z", {"shared", "a"});
  put_snapshot(ref + ":b", "2026-11-27T03:00:00Z", {"shared", "b"});
  OciLayout layout(t / "repo", OciLayout::Create::no);
  std::string shared = layout.blob_path(find_snapshot(layout, "a").layers[0].digest);
  std::string data = text(shared);
  data[data.size() / 2] ^= 1;
  write_text(shared, data);
  CHECK(check_repository(ref, false)["ok"] == true); // sizes only
  Json c = check_repository(ref, true);
  REQUIRE(c["problems"].size() == 1);
  CHECK(c["problems"][0]["needed_by"] == Json{"a", "b"});
  CHECK(code_of([&] {
          auto r = open_snapshot(ref + ":a");
          while (auto m = r->next()) {
            r->check_member(*m);
          }
        }) == ExitCode::archive_invalid);
}

TEST_CASE("repository: a copy of a damaged snapshot fails and publishes nothing") {
  // The copy hashes each member once, in its reader: what it wrote of a damaged member must
  // never appear under the member's digest, nor any snapshot in the destination.
  TempDir t;
  std::string src = "oci:" + t / "src";
  put_snapshot(src + ":a", "2026-11-27T02:00:00Z", {"first chunk", "second chunk"});
  OciLayout from(t / "src", OciLayout::Create::no);
  const Descriptor damaged = find_snapshot(from, "a").layers[1];
  std::string data = text(from.blob_path(damaged.digest));
  data[data.size() / 2] ^= 1;
  write_text(from.blob_path(damaged.digest), data);
  for (const std::string& dst : {"oci:" + t / "dst" + ":a", t / "a.ksnap"}) {
    INFO(dst);
    CHECK(code_of([&] { copy_snapshot(src + ":a", dst, {}); }) == ExitCode::archive_invalid);
  }
  OciLayout to(t / "dst", OciLayout::Create::no);
  CHECK(to.read_index()["manifests"].empty());
  CHECK(to.blob_size(damaged.digest) != damaged.size);
  CHECK(!std::filesystem::exists(t / "a.ksnap"));
  for (const auto& name : to.blob_files()) {
    INFO(name);
    CHECK(name.find(".tmp") == std::string::npos); // no temp blob left behind either
  }
}

TEST_CASE("repository: check --read-data finds a chunk whose lookup key is not its data's") {
  TempDir t;
  std::string ref = "oci:" + t / "repo";
  put_snapshot(ref + ":good", "2026-11-27T02:00:00Z", {"one", "two"});
  CHECK(check_repository(ref, true)["ok"] == true);
  // A key that is another hash of the data (SHA-256 under the BLAKE3 annotation): a later
  // save would take this blob for other bytes.
  put_snapshot(ref + ":bad", "2026-11-27T03:00:00Z", {"three"}, Json::object(), sha256_hex);
  Json c = check_repository(ref, true);
  REQUIRE(c["problems"].size() == 1);
  CHECK(c["problems"][0].dump().find("does not match its io.kata-snapshot.raw-blake3 annotation") !=
        std::string::npos);
  CHECK(c["problems"][0]["needed_by"] == Json{"bad"});
}

TEST_CASE("repository: hostile index.json and manifests are refused, never followed") {
  TempDir t;
  std::string dir = t / "repo";
  put_snapshot("oci:" + dir + ":a", "2026-11-27T02:00:00Z", {"x"});
  Json index = Json::parse(text(dir + "/index.json"));
  auto refused = [&](const Json& changed) {
    write_text(dir + "/index.json", changed.dump());
    CHECK(code_of([&] { open_snapshot("oci:" + dir + ":a"); }) == ExitCode::archive_invalid);
    CHECK(code_of([&] { gc_repository("oci:" + dir, {}); }) == ExitCode::archive_invalid);
    // A save into it fails before the pause, where it waits for the known chunks; asked
    // again, it gives the same failure.
    std::unique_ptr<SnapshotOutput> out = SnapshotOutput::open("oci:" + dir + ":new", {});
    CHECK(code_of([&] { out->prepare(); }) == ExitCode::archive_invalid);
    CHECK(code_of([&] { out->prepare(); }) == ExitCode::archive_invalid);
  };
  Json bad = index;
  bad["manifests"][0]["digest"] = "sha256:../../../../etc/passwd";
  refused(bad);
  bad = index;
  bad["manifests"][0]["size"] = 64u << 20; // over the manifest cap: never read into memory
  refused(bad);
  bad = index;
  bad["manifests"][0]["size"] = bad["manifests"][0]["size"].get<uint64_t>() - 1;
  refused(bad);
  // A manifest that is someone else's artifact is not loaded as a snapshot.
  OciLayout layout(dir, OciLayout::Create::no);
  std::string other = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
                      R"("artifactType":"application/example","config":{},"layers":[]})";
  std::string digest = sha256_digest(sha256_hex(other));
  layout.put_blob(std::as_bytes(std::span(other.data(), other.size())), digest);
  bad = index;
  bad["manifests"][0]["digest"] = digest;
  bad["manifests"][0]["size"] = other.size();
  write_text(dir + "/index.json", bad.dump());
  try {
    open_snapshot("oci:" + dir + ":a");
    FAIL("loaded another artifact");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("is not a kata-snapshot snapshot"));
  }
}

TEST_CASE("outputs: a named pipe (or a device such as /dev/null) is written through, never replaced") {
  TempDir t;
  std::string fifo = t / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::string got;
  std::thread reader([&] { got = read_file(fifo); });
  {
    std::unique_ptr<SnapshotOutput> out = SnapshotOutput::open(fifo, {});
    ArchiveWriter& w = out->start(Json{{"format", k_format_name}, {"format_version", 1}});
    w.finish();
    out->commit();
  }
  reader.join();
  struct stat st {};
  REQUIRE(::stat(fifo.c_str(), &st) == 0);
  CHECK(S_ISFIFO(st.st_mode));
  CHECK(got.find("index.json") != std::string::npos);
  CHECK(std::distance(std::filesystem::directory_iterator(t.path()), {}) == 1); // no temp file left
  CHECK(code_of([&] { SnapshotOutput::open(t.path(), {}); }) == ExitCode::usage);
}

TEST_CASE("repository: a snapshot being read holds gc off") {
  TempDir t;
  std::string ref = "oci:" + t / "repo";
  put_snapshot(ref + ":a", "2026-11-27T02:00:00Z", {"x"});
  {
    std::unique_ptr<ArchiveReader> reading = open_snapshot(ref + ":a");
    CHECK(code_of([&] { gc_repository(ref, {.lock_wait = std::chrono::milliseconds(0)}); }) ==
          ExitCode::locked);
  }
  CHECK(code_of([&] { gc_repository(ref, {.lock_wait = std::chrono::milliseconds(0)}); }) == ExitCode::ok);
}
