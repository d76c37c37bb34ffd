// Snapshots in a real OCI registry (Debian's docker-registry on loopback): saved straight to
// it and loaded straight from it, incremental pushes, a registry killed mid-push, damaged
// blobs, TLS, basic and bearer authentication, copies and skopeo.
#include "tests/e2e/registry_server.hpp"
#include "tests/e2e/snapshot_steps.hpp"

#include "util/crypto.hpp"
#include "util/deadline.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <thread>
#include <unistd.h>

using namespace ks;
using namespace ks::test;
namespace fs = std::filesystem;

namespace {

// The exit status and the error line of a command expected to fail.
CommandResult failing(const std::vector<std::string>& argv, int status) {
  CommandResult r = run_cli(argv);
  INFO(r.error_output);
  CHECK(r.status == status);
  CHECK_THAT(r.error_output, Catch::StartsWith("kata-snapshot: error: "));
  return r;
}

void flip_byte(const std::string& path, off_t at) {
  Fd f = open_file(path, O_RDWR);
  char c = 0;
  REQUIRE(::pread(f.get(), &c, 1, at) == 1);
  c = static_cast<char>(c ^ 0x5a);
  REQUIRE(::pwrite(f.get(), &c, 1, at) == 1);
}

} // namespace

TEST_CASE(
  "a guest saved straight to a registry loads from it elsewhere, and a second save pushes only new blobs") {
  GuestVm vm(
    {.workload = "bench", .memory_mb = 512, .kernel_args = {"ksnap.random_mb=64", "ksnap.text_mb=64"}});
  vm.wait_console("ksnap: tick 3");
  TestRegistry registry(vm.dir() + "/registry");
  const std::string repo = registry.ref("backups/guest");

  nlohmann::json first =
    save_paused(vm.qmp_path(), repo + ":one", with({"--chunk-size", "1"}, registry.flags()));
  CHECK(first["tag"] == "one");
  CHECK(first["digest"].get<std::string>().starts_with("sha256:"));
  const size_t blobs_first = registry.blob_count();
  Mark m1 = mark(vm);
  vm.qmp().execute("cont");
  vm.wait_console("ksnap: tick " + std::to_string(m1.tick + 2) + "\n", Millis(60000), m1.offset);

  nlohmann::json second =
    save_paused(vm.qmp_path(), repo + ":two", with({"--chunk-size", "1"}, registry.flags()));
  Mark m2 = mark(vm);
  const size_t blobs_new = registry.blob_count() - blobs_first;
  INFO("first push: " << blobs_first << " blobs; second: " << blobs_new << " new, "
                      << second["blob_bytes_written"] << " bytes of " << second["archive_bytes"]);
  CHECK(blobs_new < blobs_first / 4);
  CHECK(second["blob_bytes_written"].get<uint64_t>() < second["archive_bytes"].get<uint64_t>() / 4);

  nlohmann::json list = cli_json(with({"list", repo, "--json"}, registry.flags()))["snapshots"];
  REQUIRE(list.size() == 2);
  CHECK(list[1]["tag"] == "two");
  CHECK(cli_json(with({"check", repo, "--read-data", "--json"}, registry.flags()))["ok"] == true);
  CHECK(run_cli(with({"verify", repo + ":one"}, registry.flags())).status == 0);

  // As on another host: a fresh run directory, nothing local but the registry.
  vm.kill();
  {
    RestoredVm restored = load_ok(repo + ":two", vm.dir() + "/run", registry.flags());
    require_continues(vm, m2);
  }
  // A copy within the registry mounts the blobs instead of uploading them again.
  nlohmann::json mirror = cli_json(
    with(with({"copy", repo + ":two", registry.ref("backups/mirror:two"), "--json"}, registry.flags("src-")),
         registry.flags("dest-")));
  CHECK(mirror["blobs_mounted"].get<uint64_t>() > 10);
  CHECK(mirror["blob_bytes_written"].get<uint64_t>() < (1u << 20));
  CHECK(run_cli(with({"verify", registry.ref("backups/mirror:two")}, registry.flags())).status == 0);

  // prune keeps the newest; the older one is gone from the registry.
  nlohmann::json pruned = cli_json(with({"prune", repo, "--keep-last", "1", "--json"}, registry.flags()));
  CHECK(pruned["removed"].size() == 1);
  list = cli_json(with({"list", repo, "--json"}, registry.flags()))["snapshots"];
  REQUIRE(list.size() == 1);
  CHECK(list[0]["tag"] == "two");
  failing(with({"inspect", repo + ":one"}, registry.flags()), 7);

  // A flipped byte in a stored blob: refused (exit 3), no VM left behind. manifest.json is
  // read before QEMU starts; a vmstate chunk is checked before QEMU gets any byte of it.
  const std::string two = repo + ":two";
  nlohmann::json manifest = nlohmann::json::parse(
    run_command(with({"skopeo", "inspect", "--raw", two}, {"--tls-verify=false"})).output);
  const std::string config = manifest["config"]["digest"];
  const std::string chunk = manifest["layers"][manifest["layers"].size() / 2]["digest"];
  for (const auto& [digest, what] :
       {std::pair{config, "manifest.json"}, std::pair{chunk, "a vmstate chunk"}}) {
    INFO("damaged: " << what);
    std::string saved = read_file(registry.blob_path(digest));
    flip_byte(registry.blob_path(digest), static_cast<off_t>(saved.size() / 2));
    CommandResult r = failing(with({"load", two, "--run-dir", vm.dir() + "/bad"}, registry.flags()), 3);
    CHECK_THAT(r.error_output,
               Catch::Contains("damaged") || Catch::Contains("SHA-256") || Catch::Contains("digest"));
    CHECK(processes_with(vm.dir() + "/bad").empty());
    Fd f = open_file(registry.blob_path(digest), O_WRONLY | O_TRUNC);
    write_all(f.get(), saved, digest);
  }
}

TEST_CASE("a registry killed in the middle of a push: the push fails clearly, the VM runs on, and a rerun "
          "uploads only what is missing") {
  GuestVm vm({.workload = "bench", .memory_mb = 384, .kernel_args = {"ksnap.random_mb=96"}});
  vm.wait_console("ksnap: tick 2");
  TestRegistry registry(vm.dir() + "/registry");
  const std::string archive = vm.dir() + "/vm.ksnap";
  REQUIRE(run_cli({"save", "--qmp", vm.qmp_path(), "-o", archive, "--chunk-size", "1", "-q"}).status == 0);
  MigrationSettings before = [&] {
    qmp::Client q = vm.qmp();
    return MigrationSettings::of(q);
  }();

  // A save whose registry dies while it pushes.
  SpawnOptions so;
  so.argv = with({"env", "KSNAP_FAULT=mid-stream:sigstop", test_env().cli, "save", "--qmp", vm.qmp_path(),
                  "-o", registry.ref("vm/live:x"), "-q"},
                 registry.flags());
  so.stderr_path = vm.dir() + "/save.err";
  ChildProcess save = ChildProcess::spawn(so);
  wait_until([&] {
    return read_file("/proc/" + std::to_string(save.pid()) + "/stat").find(") T ") != std::string::npos;
  });
  registry.stop();
  ::kill(save.pid(), SIGCONT);
  std::optional<int> status = save.wait(Deadline(Millis(120000)));
  std::string err = read_file(so.stderr_path);
  INFO(err);
  CHECK(status == 5);
  CHECK_THAT(err, Catch::StartsWith("kata-snapshot: error: ") && Catch::Contains("127.0.0.1"));
  {
    qmp::Client q = vm.qmp();
    CHECK(q.execute("query-status")["status"] == "running");
    CHECK(MigrationSettings::of(q) == before);
  }
  check_thawed(vm);
  registry.start();
  failing(with({"inspect", registry.ref("vm/live:x")}, registry.flags()), 7); // nothing was published

  // A copy that dies half way, then its rerun.
  const std::string target = registry.ref("vm/file:one");
  SpawnOptions slow;
  slow.argv = {"sh", "-c",
               "pv -q -L 40m '" + archive + "' | exec " + test_env().cli + " copy - " + target + " " +
                 registry.flags("dest-")[0]};
  slow.stderr_path = vm.dir() + "/copy.err";
  ChildProcess copy = ChildProcess::spawn(slow);
  wait_until([&] { return registry.blob_count() >= 20; });
  registry.stop();
  CHECK(copy.wait(Deadline(Millis(120000))) == 5);
  const size_t partial = registry.blob_count();
  registry.start();
  nlohmann::json done = cli_json(with({"copy", archive, target, "--json"}, registry.flags("dest-")));
  const uint64_t total = fs::file_size(archive);
  INFO(partial << " blobs were there; the rerun sent " << done["blob_bytes_written"] << " of " << total);
  CHECK(done["blob_bytes_written"].get<uint64_t>() < total - (uint64_t{15} << 19));
  CHECK(run_cli(with({"verify", target}, registry.flags())).status == 0);
  // The save whose registry died, run again: it completes.
  cli_json(
    with({"save", "--qmp", vm.qmp_path(), "-o", registry.ref("vm/live:x"), "--json"}, registry.flags()));
  CHECK(run_cli(with({"verify", registry.ref("vm/live:x")}, registry.flags())).status == 0);
}

TEST_CASE("TLS, basic and bearer authentication: each failure has its exit code, and copies between oci:, "
          "registries and skopeo load") {
  GuestVm vm({});
  vm.wait_console("ksnap: tick 2");
  const std::string archive = vm.dir() + "/vm.ksnap";
  save_paused(vm.qmp_path(), archive);
  Mark m = mark(vm);
  TestRegistry secure(vm.dir() + "/secure", {.tls = true, .auth = RegistryAuth::basic});
  // Bearer tokens, and blob reads redirected to storage on another port: as Docker Hub, GHCR
  // or ECR serve them (from a CDN or S3), where our token must not follow.
  TestRegistry bearer(vm.dir() + "/bearer", {.auth = RegistryAuth::bearer, .redirect = true});

  // oci: -> docker:// (TLS with the test's CA, basic auth)
  const std::string layout = "oci:" + vm.dir() + "/layout:a";
  cli_json({"copy", archive, layout, "--json"});
  const std::string pushed = secure.ref("team/vm:a");
  cli_json(with({"copy", layout, pushed, "--json"}, secure.flags("dest-")));

  SECTION("failures") {
    const std::string ca = "--cert-dir=" + secure.cert_dir();
    CHECK_THAT(failing({"inspect", pushed, ca, "--creds", "backup:wrong"}, 6).error_output,
               Catch::Contains("refused the credentials"));
    failing({"inspect", pushed, ca}, 6); // no credentials at all
    failing(with({"inspect", secure.ref("team/nothing:a")}, secure.flags()), 7);
    CHECK_THAT(failing({"inspect", pushed, "--creds", "backup:s3cret-pass"}, 8).error_output,
               Catch::Contains("TLS"));
    failing({"inspect", "docker://127.0.0.1:1/x/y:z", "--tls-verify=false"}, 5);
    failing({"inspect", "docker://127.0.0.1/Bad/Name"}, 2);
    // A registry that does not allow deletion: prune says so, and keeps everything.
    TestRegistry keeper(vm.dir() + "/keeper", {.deletion = false});
    const std::string again = vm.dir() + "/again.ksnap"; // another manifest: another digest
    vm.qmp().execute("cont");
    save_paused(vm.qmp_path(), again);
    cli_json(with({"copy", archive, keeper.ref("keep/vm:a"), "--json"}, keeper.flags("dest-")));
    cli_json(with({"copy", again, keeper.ref("keep/vm:b"), "--json"}, keeper.flags("dest-")));
    CHECK_THAT(
      failing(with({"prune", keeper.ref("keep/vm"), "--keep-last", "1"}, keeper.flags()), 1).error_output,
      Catch::Contains("does not allow deletion"));
    CHECK(cli_json(with({"list", keeper.ref("keep/vm"), "--json"}, keeper.flags()))["snapshots"].size() == 2);
    // The credentials never show up in what the tool prints.
    CommandResult r = run_cli({"inspect", pushed, ca, "--creds", "backup:hunter2-secret"});
    CHECK(r.error_output.find("hunter2") == std::string::npos);
  }

  SECTION("auth files, copies back and forth, skopeo, and a load from a bearer-token registry") {
    // containers-auth.json(5), as `skopeo login` writes it.
    std::string pair = std::string(TestRegistry::k_user) + ":" + TestRegistry::k_password;
    std::string auth = base64(std::span(reinterpret_cast<const unsigned char*>(pair.data()), pair.size()));
    std::string host = pushed.substr(9, pushed.find('/', 9) - 9);
    std::string authfile = vm.dir() + "/auth.json";
    {
      Fd f = open_file(authfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
      write_all(f.get(), nlohmann::json{{"auths", {{host, {{"auth", auth}}}}}}.dump(), authfile);
    }
    CHECK(run_cli({"verify", pushed, "--cert-dir", secure.cert_dir(), "--authfile", authfile}).status == 0);

    // docker:// -> oci: gives the same manifest digest back
    const std::string back = "oci:" + vm.dir() + "/back:a";
    nlohmann::json b = cli_json(with({"copy", pushed, back, "--json"}, secure.flags("src-")));
    CHECK(run_cli({"verify", back}).status == 0);

    // registry -> registry, each side with its own credentials: into the bearer-token one
    const std::string moved = bearer.ref("other/vm:moved");
    cli_json(with(with({"copy", pushed, moved, "--json"}, secure.flags("src-")), bearer.flags("dest-")));
    CHECK(cli_json(with({"list", bearer.ref("other/vm"), "--json"}, bearer.flags()))["snapshots"].size() ==
          1);
    failing(with({"inspect", moved}, {"--tls-verify=false"}), 6); // the token service wants credentials
    // again, under another tag: every blob is found there (its HEAD redirected to the storage
    // too), so nothing is uploaded
    nlohmann::json again =
      cli_json(with(with({"copy", pushed, bearer.ref("other/vm:again"), "--json"}, secure.flags("src-")),
                    bearer.flags("dest-")));
    CHECK(again["blob_bytes_written"] == 0);

    // skopeo copies what we pushed to another repository, with the same digest
    CommandResult sc = run_command({"skopeo", "copy", "--src-cert-dir", secure.cert_dir(), "--src-creds",
                                    pair, "--dest-cert-dir", secure.cert_dir(), "--dest-creds", pair, pushed,
                                    secure.ref("team/copied:x")},
                                   Millis(120000));
    INFO(sc.error_output);
    REQUIRE(sc.status == 0);
    CHECK(run_cli(with({"verify", secure.ref("team/copied:x")}, secure.flags())).status == 0);

    // and the bearer registry's copy loads, as on another host, its blobs read from the
    // storage the registry redirects to
    vm.kill();
    const size_t redirects = bearer.redirects();
    RestoredVm restored = load_ok(moved, vm.dir() + "/run", bearer.flags());
    require_continues(vm, m);
    CHECK(bearer.redirects() > redirects);
  }
}
