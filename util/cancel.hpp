// SIGINT/SIGTERM turned into a cancellation request that long operations check.
#pragma once

namespace ks {

// Installs handlers for SIGINT and SIGTERM (once); SIGPIPE is ignored so that a closed
// pipe is an EPIPE error, not a silent death.
void install_cancel_handlers();

// True once SIGINT or SIGTERM arrived.
bool cancel_requested();

// The signal that requested cancellation (0 if none).
int cancel_signal();

// Throws the "interrupted" Error when cancellation was requested.
void throw_if_cancelled();

} // namespace ks
