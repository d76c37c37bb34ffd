// References as containers-transports(5) spells them.
#include "storage/store/reference.hpp"
#include "util/error.hpp"

#include <catch2/catch.hpp>

using namespace ks;

TEST_CASE("references: files, pipes and oci: repositories") {
  CHECK(parse_reference("-").kind == Reference::Kind::pipe);
  Reference f = parse_reference("/srv/a:b.ksnap"); // a colon in a path is not a transport
  CHECK(f.kind == Reference::Kind::file);
  CHECK(f.path == "/srv/a:b.ksnap");
  Reference o = parse_reference("oci:/srv/repo:nightly-1.0");
  CHECK(o.kind == Reference::Kind::oci);
  CHECK(o.path == "/srv/repo");
  CHECK(o.tag == "nightly-1.0");
  CHECK(o.with_tag("x") == "oci:/srv/repo:x");
  Reference untagged = parse_reference("oci:repo");
  CHECK(untagged.path == "repo");
  CHECK(untagged.tag.empty());
}

TEST_CASE("references: what is refused before anything runs") {
  auto usage = [](const std::string& text, const std::string& why) {
    try {
      parse_reference(text);
      FAIL("accepted " << text);
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::usage);
      CHECK_THAT(e.what(), Catch::Contains(why));
    }
  };
  usage("oci:", "names no directory");
  usage("oci::tag", "names no directory");
  usage("oci:/r:.hidden", "is not a valid tag");
  usage("oci:/r:a/b", "is not a valid tag");
  usage("oci:/r:" + std::string(129, 'a'), "is not a valid tag");
  usage("docker://registry.local/Sandbox:1", "is not a repository name");
  usage("docker://registry.local/a//b", "is not a repository name");
  usage("docker://registry.local/a-:1", "is not a repository name");
  usage("docker://registry.local/a:.x", "is not a valid tag");
  usage("docker://registry.local/a@sha256:abc", "is not a sha256 digest");
  usage("docker://registry.local/a:t@sha256:" + std::string(64, 'a'), "not both");
  usage("docker://", "names no repository");
  usage("oci-archive:/tmp/x.tar", "the oci-archive transport is not supported");
  usage("", "empty");
  CHECK(valid_tag("20261127T020000Z"));
  CHECK(valid_tag("_x"));
  CHECK_FALSE(valid_tag("-x"));
}

TEST_CASE("references: registries as skopeo reads them") {
  Reference r = parse_reference("docker://127.0.0.1:5000/backups/node-1/sandbox:nightly");
  CHECK(r.kind == Reference::Kind::registry);
  CHECK(r.host == "127.0.0.1:5000");
  CHECK(r.repo == "backups/node-1/sandbox");
  CHECK(r.tag == "nightly");
  CHECK(r.path == "127.0.0.1:5000/backups/node-1/sandbox");
  CHECK(r.with_tag("x") == "docker://127.0.0.1:5000/backups/node-1/sandbox:x");
  Reference d = parse_reference("docker://registry.example.com/vm@sha256:" + std::string(64, 'e'));
  CHECK(d.tag.empty());
  CHECK(d.digest == "sha256:" + std::string(64, 'e'));
  CHECK(d.with_tag("") == "docker://registry.example.com/vm@sha256:" + std::string(64, 'e'));
  Reference local = parse_reference("docker://localhost/a__b.c-d");
  CHECK(local.host == "localhost");
  CHECK(local.repo == "a__b.c-d");
  Reference hub = parse_reference("docker://busybox:1");
  CHECK(hub.host == "registry-1.docker.io");
  CHECK(hub.repo == "library/busybox");
  CHECK(parse_reference("docker://someone/vm").repo == "someone/vm");
}
