// The network side of a snapshot without a VM: reading QEMU's "info network", opening
// network namespaces, and what the manifest records from Kata's persist.json.
#include "snapshot/kata.hpp"
#include "snapshot/network.hpp"
#include "tests/support/fake_qmp.hpp"
#include "util/error.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

using namespace ks;
using ks::test::TempDir;

TEST_CASE("network: info network gives each tap netdev's fds, per queue, in order") {
  std::string text = "virtio-network-1: index=0,type=nic,model=virtio-net-pci,macaddr=02:42:ac:11:00:03\r\n"
                     " \\ network-1: index=0,type=tap,fd=15\r\n"
                     "net0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n"
                     " \\ network-0: index=0,type=tap,fd=4\r\n"
                     " \\ network-0: index=1,type=tap,fd=5\r\n"
                     "user0: index=0,type=user,net=10.0.2.0,restrict=off\r\n"
                     "tap9: index=0,type=tap,ifname=tap9,script=no,downscript=no\r\n";
  auto taps = parse_info_network(text);
  REQUIRE(taps.size() == 2);
  CHECK(taps[0].first == "network-1");
  CHECK(taps[0].second == std::vector<int>{15});
  CHECK(taps[1].first == "network-0");
  CHECK(taps[1].second == std::vector<int>{4, 5});
}

TEST_CASE("network: the manifest's network section round-trips") {
  NetworkInfo info{{{"network-0", {"tap0_kata", "tap0_kata"}}}, true, "/run/netns/cni-1"};
  NetworkInfo back = NetworkInfo::from_json(info.to_json());
  REQUIRE(back.find("network-0") != nullptr);
  CHECK(back.find("network-0")->ifnames.size() == 2);
  CHECK(back.vhost);
  CHECK(back.netns == "/run/netns/cni-1");
  CHECK(NetworkInfo::from_json(nullptr).taps.empty()); // an archive from before taps were recorded
}

TEST_CASE("network: --netns that is missing or not a network namespace is a usage error") {
  for (const std::string& bad : {std::string("ksnap-no-such-namespace"), std::string("/proc/self/ns/uts")}) {
    try {
      NetNamespace::open(bad);
      FAIL("opened " << bad);
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::usage);
      CHECK_THAT(e.hint(), Catch::Contains("ip netns list"));
    }
  }
  CHECK(NetNamespace::open("/proc/self/ns/net").path() == "/proc/self/ns/net");
}

TEST_CASE("kata: persist.json gives the pod's namespace and endpoints, and a bad one is only a warning") {
  TempDir root;
  Sandbox s{"abc", "go", root / "run/vc/vm/abc", "", -1, ""};
  CHECK_FALSE(sandbox_record(s, root.path()).contains("persist"));
  std::filesystem::create_directories(root / "run/vc/sbs/abc");
  std::ofstream(root / "run/vc/sbs/abc/persist.json") << R"({"State":"running","Network":{
    "NetworkID":"/var/run/netns/cni-42","NetworkCreated":true,"Endpoints":[
      {"Type":"virtual","Veth":{"NetPair":{"ID":"x","Name":"br0_kata","TAPIface":{"Name":"tap0_kata"},
        "VirtIface":{"Name":"eth0","HardAddr":"02:42:ac:11:00:02"},"NetInterworkingModel":2}}},
      {"Type":"tap","Tap":{"TapInterface":{"ID":"y","Name":"tap1","TAPIface":{"Name":"tap1"}}}}]}})";
  nlohmann::json r = sandbox_record(s, root.path());
  CHECK(r["persist"]["netns"] == "/var/run/netns/cni-42");
  CHECK(r["persist"]["endpoints"][0]["tap"] == "tap0_kata");
  CHECK(r["persist"]["endpoints"][0]["interface"] == "eth0");
  CHECK(r["persist"]["endpoints"][0]["interworking_model"] == 2);
  CHECK(r["persist"]["endpoints"][1]["tap"] == "tap1");
  std::ofstream(root / "run/vc/sbs/abc/persist.json") << "{not json";
  CHECK_FALSE(sandbox_record(s, root.path()).contains("persist"));
}
