// The project's one error model: code that fails throws ks::Error, which carries the exit code
// the CLI returns and an optional hint. Internal invariants use KS_ASSERT instead.
#pragma once

#include <stdexcept>
#include <string>

namespace ks {

// Documented exit codes (DESIGN.md, "Command line").
enum class ExitCode : int {
  ok = 0,
  failed = 1,
  usage = 2,
  archive_invalid = 3,
  locked = 4,
  registry_unreachable = 5,  // no answer, or 5xx after the retries
  registry_unauthorized = 6, // credentials missing or refused
  registry_not_found = 7,    // no such repository, tag or digest
  registry_untrusted = 8,    // its TLS certificate does not verify
};

class Error : public std::runtime_error {
public:
  explicit Error(const std::string& what, ExitCode code = ExitCode::failed, std::string hint = {})
    : std::runtime_error(what), m_code(code), m_hint(std::move(hint)) {}

  ExitCode code() const { return m_code; }
  const std::string& hint() const { return m_hint; }

private:
  ExitCode m_code;
  std::string m_hint;
};

// "WHAT: strerror(errno)" as an Error.
[[noreturn]] void throw_errno(const std::string& what, int err);
[[noreturn]] void throw_errno(const std::string& what);

[[noreturn]] void assertion_failed(const char* expr, const char* file, int line);

} // namespace ks

// Always-on check of an internal invariant (a bug, not a user error).
#define KS_ASSERT(expr) ((expr) ? (void)0 : ::ks::assertion_failed(#expr, __FILE__, __LINE__))
