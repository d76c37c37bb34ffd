// Fault injection for tests and for operators who want to see what a failure leaves behind.
// KSNAP_FAULT=STEP[:ACTION] makes the tool fail at a named step of save or load: the step
// names `-v` prints ("discover", "pause+capture", "start qemu", ...), plus "mid-stream" once
// the first vmstate bytes went through. The fault fires when that step is done. ACTION:
//   error    throw an Error, as a failing step would (the default);
//   sigterm  send ourselves SIGTERM, as an operator's kill would, and carry on;
//   sigkill  send ourselves SIGKILL: nothing of ours runs after it;
//   sigstop  stop there until SIGCONT (a test changes the world meanwhile, fills a disk);
//   hang     stop there until a signal arrives (then end as interrupted).
// A few conditions that real components produce only rarely can be pretended instead
// (fault_pretends): "vhost in flight" (virtiofsd held a request when its device stopped, and
// answered it just after) and "vhost hung" (it never answers), every time with error, the
// first time only with once.
// Unset, a fault point is one load of a flag.
#pragma once

#include <string>
#include <string_view>

namespace ks {

// Checks KSNAP_FAULT once; throws a usage Error naming what is wrong with it.
void check_fault_setting();

// Where step STEP is done: fires the configured fault if it names STEP.
void fault_point(std::string_view step);

// Whether KSNAP_FAULT pretends CONDITION now (see above).
bool fault_pretends(std::string_view condition);

// A fault point passed many times that fires on the first pass only ("mid-stream").
class FaultOnce {
public:
  explicit FaultOnce(std::string step) : m_step(std::move(step)) {}
  void reached() {
    if (!m_passed) {
      m_passed = true;
      fault_point(m_step);
    }
  }

private:
  std::string m_step;
  bool m_passed = false;
};

} // namespace ks
