// UNIX stream sockets: connect with a deadline, send with SCM_RIGHTS, peer credentials.
#pragma once

#include "util/fd.hpp"

#include <string>
#include <sys/types.h>

namespace ks {

class Deadline;

// Connects to the UNIX socket at PATH, retrying while it does not exist or refuses
// connections until DEADLINE (so a server that is starting up can be waited for).
Fd connect_unix(const std::string& path, const Deadline& deadline);

// True when something accepts connections on the UNIX socket at PATH right now.
bool socket_in_use(const std::string& path);

// Listening socket at PATH (an existing socket file there is replaced).
Fd listen_unix(const std::string& path);

// Sends DATA with FD attached as SCM_RIGHTS ancillary data.
void send_with_fd(int sock, const std::string& data, int fd);

// The pid of the process at the other end (SO_PEERCRED), or -1.
pid_t peer_pid(int sock);

// Who besides the socket's owner can connect to the UNIX socket at PATH (connecting needs
// write permission on it and search permission on every directory above it): "" for no
// one, else "every user" or "the members of group NAME". Root is not counted.
std::string socket_exposure(const std::string& path);

} // namespace ks
