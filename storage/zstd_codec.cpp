#include "storage/zstd_codec.hpp"

#include "util/error.hpp"

#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <sys/mman.h>
#include <zstd.h>

namespace ks {

namespace {
constexpr size_t k_huge_page = 2u << 20;
} // namespace

void* allocate_buffer(size_t bytes) {
  void* p = nullptr;
  if (bytes >= k_huge_page) {
    if (::posix_memalign(&p, k_huge_page, bytes) != 0) {
      p = nullptr;
    } else { // whole huge pages only: the tail (a frame's few KiB over the chunk) stays small
      ::madvise(p, bytes / k_huge_page * k_huge_page, MADV_HUGEPAGE); // a hint: may not be honoured
    }
  } else {

    p = std::malloc(bytes == 0 ? 1 : bytes);
  }
  if (p == nullptr) {
    throw std::bad_alloc();
  }
  return p;
}

void free_buffer(void* p) noexcept {
  std::free(p); // pairs with allocate_buffer: posix_memalign or malloc
}

namespace {

struct CctxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DctxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};
using Cctx = std::unique_ptr<ZSTD_CCtx, CctxDeleter>;
using Dctx = std::unique_ptr<ZSTD_DCtx, DctxDeleter>;

// One context per worker thread, reused across chunks.
ZSTD_CCtx* thread_cctx() {
  thread_local Cctx ctx(ZSTD_createCCtx());
  KS_ASSERT(ctx);
  return ctx.get();
}

ZSTD_DCtx* thread_dctx() {
  thread_local Dctx ctx(ZSTD_createDCtx());
  KS_ASSERT(ctx);
  return ctx.get();
}

void check(size_t r, const char* what) {
  if (ZSTD_isError(r)) {
    throw Error(std::string(what) + ": " + ZSTD_getErrorName(r));
  }
}

constexpr int k_min_hash_log = 17; // 512 KiB of table: stays in L2
constexpr int k_fast_levels = 2;   // levels whose default hash table is smaller than that

} // namespace

void zstd_compress(std::span<const std::byte> data, int level, Bytes& out) {
  ZSTD_CCtx* c = thread_cctx();
  ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
  check(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level), "zstd level");
  check(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1), "zstd checksum");
  check(ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1), "zstd content size");
  // The fast levels' hash table (2^13 entries at level 1) misses many of a VM's repeats; a
  // bigger one finds them at the same speed (measured on the bench guest: 0.25% smaller,
  // no slower), which keeps the archive under `zstd -1 -T<cores>`'s size.
  if (level <= k_fast_levels) {
    check(ZSTD_CCtx_setParameter(c, ZSTD_c_hashLog, k_min_hash_log), "zstd hash log");
  }
  out.resize(ZSTD_compressBound(data.size()));
  size_t n = ZSTD_compress2(c, out.data(), out.size(), data.data(), data.size());
  check(n, "zstd compression failed");
  out.resize(n);
}

size_t zstd_frame_bound(size_t size) {
  return ZSTD_compressBound(size);
}

void zstd_decompress(std::span<const std::byte> frame, size_t max_size, Bytes& out) {
  unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > max_size) {
    throw Error("not a valid zstd chunk (bad frame header)", ExitCode::archive_invalid);
  }
  out.resize(size);
  size_t n = ZSTD_decompressDCtx(thread_dctx(), out.data(), out.size(), frame.data(), frame.size());
  if (ZSTD_isError(n) || n != size) {
    throw Error(std::string("corrupt zstd chunk: ") +
                  (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short frame"),
                ExitCode::archive_invalid);
  }
}

size_t zstd_decompress_pieces(std::span<const std::byte> frame, size_t max_size, Bytes& piece,
                              const std::function<void(std::span<const std::byte>)>& sink) {
  unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > max_size) {
    throw Error("not a valid zstd chunk (bad frame header)", ExitCode::archive_invalid);
  }
  ZSTD_DCtx* d = thread_dctx();
  ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
  ZSTD_inBuffer in{frame.data(), frame.size(), 0};
  size_t total = 0;
  size_t left = 1;
  while (left != 0) {
    ZSTD_outBuffer out{piece.data(), piece.size(), 0};
    left = ZSTD_decompressStream(d, &out, &in);
    if (ZSTD_isError(left)) {
      throw Error(std::string("corrupt zstd chunk: ") + ZSTD_getErrorName(left), ExitCode::archive_invalid);
    }
    total += out.pos;
    if (total > size) {
      break;
    }
    if (out.pos > 0) {
      sink(std::span(piece.data(), out.pos));
    } else if (in.pos == in.size) {
      break; // no progress and no input left: the frame is cut short
    }
  }
  if (left != 0 || total != size || in.pos != in.size) {
    throw Error("corrupt zstd chunk: its content does not match its header", ExitCode::archive_invalid);
  }
  return total;
}

struct ZstdStream::Impl {

  Cctx ctx{ZSTD_createCCtx()};
  Sink sink;
  void* sink_ctx;
  Bytes buf = Bytes(ZSTD_CStreamOutSize());

  void drive(std::span<const std::byte> data, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    for (;;) {
      ZSTD_outBuffer out{buf.data(), buf.size(), 0};
      size_t left = ZSTD_compressStream2(ctx.get(), &out, &in, mode);
      check(left, "zstd compression failed");
      if (out.pos > 0) {
        sink(sink_ctx, std::span(buf.data(), out.pos));
      }
      bool done = mode == ZSTD_e_continue ? in.pos == in.size : left == 0;
      if (done) {
        return;
      }
    }
  }
};

ZstdStream::ZstdStream(int level, Sink sink, void* ctx) : m_impl(new Impl{.sink = sink, .sink_ctx = ctx}) {
  KS_ASSERT(m_impl->ctx);
  check(ZSTD_CCtx_setParameter(m_impl->ctx.get(), ZSTD_c_compressionLevel, level), "zstd level");
  check(ZSTD_CCtx_setParameter(m_impl->ctx.get(), ZSTD_c_checksumFlag, 1), "zstd checksum");
}

ZstdStream::~ZstdStream() {
  delete m_impl;
}

void ZstdStream::write(std::span<const std::byte> data) {
  m_impl->drive(data, ZSTD_e_continue);
}

void ZstdStream::finish() {
  m_impl->drive({}, ZSTD_e_end);
}

} // namespace ks
