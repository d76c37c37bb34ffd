// Removing entries inside a directory tree named by untrusted paths: nothing outside ROOT is
// ever touched, whatever symlinks or ".." the tree or the names hold.
#pragma once

#include "util/fd.hpp"

#include <string>

namespace ks {

// Removes ROOT/NAME (recursively for a directory). NAME is relative ("a/b" or "./a/b"); it
// is resolved beneath ROOT without following any symlink (openat2 RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS); a symlink is removed itself. A NAME that is already gone, or whose
// parent is, is fine. Throws for a NAME that is empty, absolute, "." or leaves ROOT.
void remove_beneath(const std::string& root, const std::string& name);

// Opens NAME with FLAGS (open(2) flags) in the directory ROOT_FD, resolved beneath it without
// following any symlink, ".." out or magic link. Returns an empty Fd with errno set when it
// cannot.
Fd open_beneath(int root_fd, const std::string& name, int flags);

// The directory ROOT, opened O_PATH, for open_beneath; throws when it cannot be.
Fd open_root(const std::string& root);

} // namespace ks
