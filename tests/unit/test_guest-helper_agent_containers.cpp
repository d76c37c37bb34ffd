// The helper's container mode without a guest: the raw image transfers of its protocol with a
// fake ContainerOps, and what it reads of containers and CRIU from a fake /proc, cgroup and
// bundle tree.
#include "guest-helper/agent/commands.hpp"
#include "guest-helper/agent/containers.hpp"
#include "tests/support/fake_qmp.hpp"
#include "util/fd.hpp"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace ks;
using namespace ks::agent;
using ks::test::TempDir;
namespace fs = std::filesystem;

namespace {

// Images in memory; create/open hand out pipe or temp file descriptors.
class FakeContainers : public ContainerOps {
public:
  explicit FakeContainers(fs::path dir) : m_dir(std::move(dir)) {}
  Json list() override { return {{"containers", Json::array()}}; }
  Json dump(const std::string& id, const std::string&, std::chrono::seconds, const Heartbeat&) override {
    return {{"id", id}};
  }
  Json finish(const std::string& id, const std::string&) override { return {{"id", id}}; }
  int open_image(const std::string&, const std::string& name, uint64_t& size) override {
    size = fs::file_size(m_dir / name);
    return ::open((m_dir / name).c_str(), O_RDONLY | O_CLOEXEC);
  }
  int create_image(const std::string&, const std::string& name, uint64_t size) override {
    if (size > 1000000) {
      throw std::runtime_error("no room for " + name);
    }
    return ::open((m_dir / ("in-" + name)).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  }
  Json restore(const std::string& id, const Heartbeat&) override { return {{"id", id}}; }
  Json discard(const std::string& id) override { return {{"id", id}}; }
  void host_gone() override { ++gone; }
  int gone = 0;

private:
  fs::path m_dir;
};

Effects effects(std::shared_ptr<ContainerOps> containers) {
  return {.frozen = [] { return false; }, .containers = std::move(containers)};
}

struct Wire {
  std::string out;
  Agent::Reply reply() {
    return [this](std::string_view s) { out.append(s); };
  }
};

void spit(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

} // namespace

TEST_CASE("helper: a receive takes exactly the announced bytes, whatever they hold, then answers") {
  TempDir dir;
  auto fake = std::make_shared<FakeContainers>(dir.path());
  Agent agent(effects(fake));
  Wire w;
  std::string image = std::string("line\n{\"execute\":\"guest-ping\"}\n") + '\xff' + std::string(5000, 'x');
  std::string req =
    R"({"execute":"kata-snapshot-container-receive","arguments":{"id":"c1","name":"pages-1.img","bytes":)" +
    std::to_string(image.size()) + R"(},"id":7})" + "\n";
  std::string all = req + image + R"({"execute":"guest-ping"})" + "\n";
  // Fed in awkward pieces: the request and the bytes split anywhere.
  for (size_t i = 0; i < all.size(); i += 777) {
    agent.feed(std::string_view(all).substr(i, 777), w.reply());
  }
  CHECK(read_file(fs::path(dir.path()) / "in-pages-1.img") == image);
  // One answer for the receive (after the bytes, with the request's id), one for the ping; the
  // ping inside the image was not taken for a request.
  CHECK(w.out ==
        R"({"id":7,"return":{"bytes":)" + std::to_string(image.size()) + "}}\n" + R"({"return":{}})" + "\n");
}

TEST_CASE("helper: a refused receive still reads its bytes, and answers with the refusal") {
  TempDir dir;
  Agent agent(effects(std::make_shared<FakeContainers>(dir.path())));
  Wire w;
  std::string image(1000001, '\n');
  agent.feed(
    R"({"execute":"kata-snapshot-container-receive","arguments":{"id":"c1","name":"big","bytes":1000001}})"
    "\n" +
      image,
    w.reply());
  CHECK(w.out.find("no room for big") != std::string::npos);
  CHECK(std::count(w.out.begin(), w.out.end(), '\n') == 1); // not a million "invalid JSON"
}

TEST_CASE("helper: a send answers with the length, then the bytes") {
  TempDir dir;
  spit(fs::path(dir.path()) / "core-1.img", std::string("\0\1\2\n\xff", 5));
  Agent agent(effects(std::make_shared<FakeContainers>(dir.path())));
  Wire w;
  agent.feed(R"({"execute":"kata-snapshot-container-send","arguments":{"id":"c1","name":"core-1.img"}})"
             "\n",
             w.reply());
  CHECK(w.out == R"({"return":{"bytes":5}})"
                 "\n" +
                   std::string("\0\1\2\n\xff", 5));
}

TEST_CASE("helper: the host going away drops a receive and lets held containers go") {
  TempDir dir;
  auto fake = std::make_shared<FakeContainers>(dir.path());
  Agent agent(effects(fake));
  Wire w;
  agent.feed(R"({"execute":"kata-snapshot-container-receive","arguments":{"id":"c1","name":"x","bytes":100}})"
             "\nhalf",
             w.reply());
  agent.reset();
  CHECK(fake->gone == 1);
  agent.feed(R"({"execute":"guest-ping"})"
             "\n",
             w.reply());
  CHECK(w.out == R"({"return":{}})"
                 "\n"); // a request again, not image bytes
}

TEST_CASE("helper: container mode's arguments are checked, and it is refused without container support") {
  Agent bare(effects(nullptr));
  Wire w;
  bare.feed(R"({"execute":"kata-snapshot-containers"})"
            "\n",
            w.reply());
  CHECK(w.out.find("container mode is not supported") != std::string::npos);
  TempDir dir;
  Agent agent(effects(std::make_shared<FakeContainers>(dir.path())));
  Wire v;
  agent.feed(R"({"execute":"kata-snapshot-container-dump","arguments":{"id":"c1","after":"quit"}})"
             "\n",
             v.reply());
  CHECK(v.out.find("must be resume, pause or hold") != std::string::npos);
  CHECK(valid_image_name("pages-1.img"));
  CHECK(valid_image_name("tmpfs-dev-30.tar.gz.img"));
  for (const char* bad : {"", ".", "..", "../x", "a/b", "-x", ".hidden", "a b"}) {
    CHECK_FALSE(valid_image_name(bad));
  }
}

namespace {

// A fake guest: bundles, cgroup, /proc, modules, lo.
struct FakeGuest {
  TempDir dir;
  GuestPaths paths;
  FakeGuest() {
    fs::path d = dir.path();
    paths.containers = d / "run/kata-containers";
    paths.cgroup_root = d / "cgroup";
    paths.proc = d / "proc";
    paths.sys_module = d / "module";
    paths.net = d / "net";
    paths.work = d / "work";
    paths.criu = {d / "bin/criu"};
    paths.path = {d / "bin"};
    for (const char* tool : {"criu", "tar", "gzip"}) {
      spit(d / "bin" / tool, "#!/bin/sh\n");
      fs::permissions(d / "bin" / tool, fs::perms::owner_all);
    }
    for (const auto& m : k_criu_modules) {
      fs::create_directories(d / "module" / m);
    }
    spit(d / "net/lo/flags", "0x9\n");
    spit(d / "proc/self/mounts", "tmpfs / tmpfs rw 0 0\nproc /proc proc rw 0 0\n");
    fs::create_directories(d / "proc/self/ns");
    fs::create_symlink("net:[4026531840]", d / "proc/self/ns/net");
  }
  // Container ID with processes PIDS, the first its init (NSpid ... 1) in session SESSION.
  void container(const std::string& id, std::vector<int> pids, int session) {
    fs::path d = dir.path();
    spit(d / "run/kata-containers" / id / "config.json",
         R"({"root":{"path":"rootfs"},"linux":{"cgroupsPath":"/kata/)" + id + R"("}})");
    std::string procs;
    for (size_t i = 0; i < pids.size(); ++i) {
      std::string p = std::to_string(pids[i]);
      procs += p + "\n";
      spit(d / "proc" / p / "status", "Name:\tx\nNSpid:\t" + p + "\t" + std::to_string(i + 1) + "\n");
      spit(d / "proc" / p / "stat",
           p + " (ctr counter) S 1 " + p + " " + std::to_string(session) + " 0 -1\n");
      fs::create_directories(d / "proc" / p / "ns");
      fs::create_directories(d / "proc" / p / "fd");
      fs::create_symlink("net:[4026531840]", d / "proc" / p / "ns/net");
      spit(
        d / "proc" / p / "net/tcp",
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n");
    }
    spit(d / "cgroup/kata" / id / "cgroup.procs", procs);
    spit(d / "cgroup/kata" / id / "cgroup.freeze", "0\n");
  }
};

std::string all_problems(const std::vector<Problem>& ps) {
  std::string s;
  for (const auto& p : ps) {
    s += p.what + " / " + p.fix + "\n";
  }
  return s;
}

} // namespace

TEST_CASE("helper: a container is found as Kata lays it out, its init by its pid namespace") {
  FakeGuest g;
  g.container("ctr-a", {200, 201}, 200);
  Container c = find_container(g.paths, "ctr-a");
  CHECK(c.init == 200);
  CHECK(c.pids.size() == 2);
  CHECK(c.rootfs == g.paths.containers + "/ctr-a/rootfs");
  CHECK(c.cgroup == g.paths.cgroup_root + "/kata/ctr-a");
  CHECK(c.state() == "running");
  CHECK(container_ids(g.paths) == std::vector<std::string>{"ctr-a"});
  CHECK_THROWS_WITH(find_container(g.paths, "nope"), Catch::Contains("no container nope"));
  CHECK_THROWS_WITH(find_container(g.paths, "../etc"), Catch::Contains("invalid container id"));
}

TEST_CASE("helper: what keeps a container from a checkpoint is named, with the fix") {
  FakeGuest g;
  g.container("ok", {300}, 300);
  g.container("child-session", {310}, 1);
  CHECK(all_problems(criu_problems(g.paths)) == "");
  CHECK(container_problems(g.paths, find_container(g.paths, "ok")).empty());
  auto p = container_problems(g.paths, find_container(g.paths, "child-session"));
  REQUIRE(p.size() == 1);
  CHECK_THAT(p[0].what, Catch::Contains("not a session leader"));
  CHECK_THAT(p[0].fix, Catch::Contains("setsid()"));

  // A terminal, a network namespace of its own, a TCP connection.
  fs::path proc = g.paths.proc;
  fs::create_symlink("/dev/pts/0", proc / "300/fd/0");
  fs::remove(proc / "300/ns/net");
  fs::create_symlink("net:[4026532000]", proc / "300/ns/net");
  fs::create_symlink("socket:[777]", proc / "300/fd/3");
  spit(proc / "300/net/tcp",
       "  sl  local rem st ...\n   0: 0100007F:1F90 0100007F:D2F0 01 0:0 0:0 0 0 0 777 1\n");
  std::string all = all_problems(container_problems(g.paths, find_container(g.paths, "ok")));
  CHECK_THAT(all, Catch::Contains("holds a terminal (/dev/pts/0)"));
  CHECK_THAT(all, Catch::Contains("its own network namespace"));
  CHECK_THAT(all, Catch::Contains("1 open TCP connections"));
}

TEST_CASE("helper: what keeps CRIU from running in the guest is named, with the fix") {
  FakeGuest g;
  fs::path d = g.dir.path();
  fs::remove(d / "bin/criu");
  fs::remove(d / "bin/tar");
  fs::remove(d / "bin/gzip");
  fs::remove_all(d / "module/nf_tables");
  fs::remove_all(d / "module/unix_diag");
  spit(d / "net/lo/flags", "0x8\n");
  spit(d / "proc/self/mounts", "rootfs / rootfs rw 0 0\n");
  spit(d / "bin/busybox", "");
  fs::permissions(d / "bin/busybox", fs::perms::owner_all);
  fs::create_symlink("busybox", d / "bin/tar");
  std::string all = all_problems(criu_problems(g.paths));
  CHECK_THAT(all, Catch::Contains("CRIU is not installed in the guest"));
  CHECK_THAT(all, Catch::Contains("GNU tar is missing in the guest"));
  CHECK_THAT(all, Catch::Contains("busybox"));
  CHECK_THAT(all, Catch::Contains("GNU gzip is missing"));
  CHECK_THAT(all, Catch::Contains("not loaded in the guest: nf_tables unix_diag"));
  CHECK_THAT(all, Catch::Contains("crc32c_generic libcrc32c nfnetlink nf_tables"));
  CHECK_THAT(all, Catch::Contains("loopback interface is down"));
  CHECK_THAT(all, Catch::Contains("initramfs"));
}
