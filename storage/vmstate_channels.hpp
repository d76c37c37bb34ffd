// The multifd vmstate layout: QEMU migrates over several connections at once, its main
// channel (device state, RAM section headers, sync markers) and N multifd channels (RAM
// pages, sent by QEMU's threads in parallel, received by QEMU's threads in parallel). Each
// connection's bytes become their own series of chunks, interleaved in the archive in the
// order they were received, so that a load can replay them into as many connections at
// once, each decompressed on its own thread, in an order QEMU accepts with bounded memory.
#pragma once

#include "storage/vmstate_stream.hpp"
#include "util/deadline.hpp"
#include "util/fd.hpp"

#include <functional>

namespace ks {

// The migration connections of a save: QEMU connects CONNECTIONS times to the listening
// socket LISTEN_FD (its main channel and one per multifd channel). ACCEPT_PEER vets each
// connection (false: it is closed and not counted).
struct ChannelSource {
  int listen_fd = -1;
  unsigned connections = 0;
  std::function<bool(int)> accept_peer;
};

// Accepts the connections and reads them all until each one ends; every connection's bytes
// are cut into chunks of its own series (the one that starts with QEMU's QEVM header is
// series 0, the main channel). Chunks are compressed on workers and written in the order
// they were filled, and a partly filled chunk is written once other series have filled
// k_channel_flush_after chunks since it began: a load never needs more than
// k_channel_queue chunks of one series ahead of another's.
StreamStats write_vmstate_channels(const ChannelSource& source, ArchiveWriter& writer,
                                   const StreamOptions& options);

// Reads the rest of an archive written by write_vmstate_channels with CHANNELS multifd
// channels. Each series has a thread that hash-checks each chunk, decompresses it and writes
// it into its own connection to QEMU, opened by CONNECT on the series' first chunk (null
// CONNECT: check and decompress only). The newest chunk of the main channel is held back
// until the next member has been read, the last one until index.json has been checked, so
// QEMU never completes a migration from an incomplete or inconsistent archive.
StreamStats read_vmstate_channels(ArchiveReader& reader, unsigned channels,
                                  const std::function<Fd()>& connect, const StreamOptions& options,
                                  const OtherMember& other);

// The chunk size for a multifd save over CONNECTIONS: each connection fills a chunk of its
// own, so with many of them the chunks shrink (by halves, to 1 MiB at least) until those
// partial chunks take at most half of the pipeline's memory budget, and the chunks a load
// may hold per connection (k_channel_queue + 1) at most all of it. Measured before the
// second bound: a load of a --threads 16 save (17 connections, 2 MiB chunks) peaked at
// 176 to 250 MiB.
size_t channel_chunk_size(size_t wanted, unsigned connections);

inline constexpr uint64_t k_channel_flush_after = 2;
inline constexpr size_t k_channel_queue = k_channel_flush_after + 3;
// A load gives up when a full queue has not moved for this long.
inline constexpr Millis k_channel_stall{120000};

} // namespace ks
