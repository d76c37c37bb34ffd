#include "util/fault.hpp"

#include "util/cancel.hpp"
#include "util/error.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <unistd.h>

namespace ks {

namespace {

enum class Action { error, sigterm, sigkill, sigstop, hang, once };

struct Fault {
  std::string step;
  Action action = Action::error;
};

// Every step a fault can name: save's, load's, the middle of either's stream, container
// mode's, and the conditions fault_pretends stands in for.
constexpr std::array<std::string_view, 22> k_steps = {"discover",
                                                      "preflight",
                                                      "guard",
                                                      "quiesce",
                                                      "pause+capture",
                                                      "stream",
                                                      "commit",
                                                      "resume",
                                                      "manifest",
                                                      "shares",
                                                      "start qemu",
                                                      "host check",
                                                      "staged",
                                                      "guest refresh",
                                                      "mid-stream",
                                                      "container dump",
                                                      "container commit",
                                                      "container transfer",
                                                      "container upload",
                                                      "container upload done",
                                                      "vhost in flight",
                                                      "vhost hung"};

// The conditions fault_pretends stands in for (the rest are steps fault_point fails).
constexpr std::array<std::string_view, 2> k_conditions = {"vhost in flight", "vhost hung"};

std::optional<Fault> parse(const char* setting) {
  if (setting == nullptr || *setting == '\0') {
    return std::nullopt;
  }
  std::string s(setting);
  Fault f;
  size_t colon = s.rfind(':');
  std::string action = colon == std::string::npos ? "error" : s.substr(colon + 1);
  f.step = colon == std::string::npos ? s : s.substr(0, colon);
  const std::string hint =
    "KSNAP_FAULT=STEP[:error|sigterm|sigkill|sigstop|hang|once], STEP one of the names -v prints";
  if (std::find(k_steps.begin(), k_steps.end(), f.step) == k_steps.end()) {
    throw Error("KSNAP_FAULT names no step: \"" + f.step + "\"", ExitCode::usage, hint);
  }
  if (action == "error") {
    f.action = Action::error;
  } else if (action == "sigterm") {
    f.action = Action::sigterm;
  } else if (action == "sigkill") {
    f.action = Action::sigkill;
  } else if (action == "sigstop") {
    f.action = Action::sigstop;
  } else if (action == "hang") {
    f.action = Action::hang;
  } else if (action == "once") {
    f.action = Action::once;
  } else {
    throw Error("KSNAP_FAULT has an unknown action: \"" + action + "\"", ExitCode::usage, hint);
  }
  // A condition is pretended always (error) or the first time (once); a step fails.
  bool condition = std::find(k_conditions.begin(), k_conditions.end(), f.step) != k_conditions.end();
  bool pretending = f.action == Action::error || f.action == Action::once;
  if (condition ? !pretending : f.action == Action::once) {
    throw Error("KSNAP_FAULT: \"" + action + "\" does not apply to " + (condition ? "condition" : "step") +
                  " \"" + f.step + "\"",
                ExitCode::usage,
                condition ? "a condition takes :error (always) or :once (the first time)"
                          : "a step takes :error, :sigterm, :sigkill, :sigstop or :hang");
  }
  return f;
}

const std::optional<Fault>& configured() {
  static const std::optional<Fault> fault = parse(std::getenv("KSNAP_FAULT"));
  return fault;
}

} // namespace

void check_fault_setting() {
  (void)configured();
}

void fault_point(std::string_view step) {
  const std::optional<Fault>& fault = configured();
  if (!fault || fault->step != step) {
    return;
  }
  switch (fault->action) {
  case Action::error:
    throw Error("injected fault after step \"" + fault->step + "\" (KSNAP_FAULT)");
  case Action::sigterm:
    ::kill(::getpid(), SIGTERM);
    return;
  case Action::sigkill:
    ::kill(::getpid(), SIGKILL);
    return;
  case Action::sigstop:
    ::kill(::getpid(), SIGSTOP);
    return;
  case Action::once:
    return; // refused for steps by parse()
  case Action::hang:
    while (!cancel_requested()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw_if_cancelled();
  }
}

bool fault_pretends(std::string_view condition) {
  static std::atomic<bool> pretended{false};
  const std::optional<Fault>& fault = configured();
  if (!fault || fault->step != condition) {
    return false;
  }
  return fault->action == Action::error || (fault->action == Action::once && !pretended.exchange(true));
}

} // namespace ks
