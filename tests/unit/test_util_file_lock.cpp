// The one lock type: shared and exclusive holders, bounded waits, dead holders' records.
#include "tests/support/fake_qmp.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/file_lock.hpp"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <filesystem>
#include <unistd.h>

using namespace ks;
using ks::test::TempDir;

namespace {

FileLock::Options opts(LockMode mode, int wait_ms = 0) {
  return {.mode = mode,
          .wait = std::chrono::milliseconds(wait_ms),
          .purpose = "test",
          .what = "the thing",
          .hint = "wait"};
}

} // namespace

TEST_CASE("file lock: shared holders together, an exclusive one alone, and who holds it is said") {
  TempDir t;
  std::string path = t / "lock";
  FileLock a(path, opts(LockMode::shared));
  FileLock b(path, opts(LockMode::shared)); // flock locks per open file: a second one in this process works
  CHECK(lock_holders(path).size() == 1);    // both records have this pid's name: one file
  try {
    FileLock c(path, opts(LockMode::exclusive, 200));
    FAIL("took an exclusive lock over shared holders");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::locked);
    CHECK_THAT(e.what(),
               Catch::StartsWith("the thing is locked by ") && Catch::Contains("(test, shared, since "));
    CHECK(e.hint() == "wait");
  }
}

TEST_CASE("file lock: the record a dead holder left is taken over") {
  TempDir t;
  std::string path = t / "lock";
  std::filesystem::create_directories(path + ".holders");
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  {
    Fd f = open_file(path + ".holders/old.json", O_WRONLY | O_CREAT, 0600);
    write_all(f.get(),
              std::string(R"({"host":")") + host +
                R"(","pid":999999,"start_ticks":"1","purpose":"save","mode":"shared"})",
              "record");
  }
  CHECK(lock_holders(path).empty()); // dead: not named as a holder
  FileLock l(path, opts(LockMode::exclusive));
  REQUIRE(l.taken_over().size() == 1);
  CHECK_THAT(l.taken_over()[0], Catch::Contains("pid 999999 (save"));
  CHECK_FALSE(std::filesystem::exists(path + ".holders/old.json"));
}
