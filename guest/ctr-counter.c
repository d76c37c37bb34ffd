// ctr-counter: the test guest's container workload. An in-memory counter and a heap of
// HEAP_MB MiB filled with pseudo-random bytes; every 0.2 s it counts, checks one MiB of the
// heap against the checksum taken when it was filled, and rewrites /run/tick with
// "tick N heap M MiB ok|BAD". A checkpoint that loses or corrupts memory shows as a counter
// that restarts or a BAD. With --setsid it makes itself a session leader first, as crun and
// runc do for a container's init; without, it keeps the session of whoever started it.
// Built static: the container's rootfs holds nothing else but busybox.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1u << 20)

static uint64_t next(uint64_t* s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static uint64_t sum(const uint64_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) {
    h = (h ^ p[i]) * 1099511628211ull;
  }
  return h;
}

int main(int argc, char** argv) {
  int arg = 1;
  if (arg < argc && strcmp(argv[arg], "--setsid") == 0) {
    if (setsid() < 0) {
      perror("ctr-counter: setsid");
      return 1;
    }
    arg++;
  }
  size_t heap_mb = arg < argc ? strtoul(argv[arg], NULL, 10) : 0;
  size_t words = MIB / sizeof(uint64_t);
  uint64_t* heap = heap_mb ? malloc(heap_mb * MIB) : NULL;
  uint64_t* sums = heap_mb ? calloc(heap_mb, sizeof(uint64_t)) : NULL;
  if (heap_mb && (!heap || !sums)) {
    fprintf(stderr, "ctr-counter: cannot allocate %zu MiB\n", heap_mb);
    return 1;
  }
  uint64_t seed = (((uint64_t)time(NULL) * 2654435761u) ^ (uint64_t)getpid()) | 1;
  for (size_t m = 0; m < heap_mb; m++) {
    for (size_t i = 0; i < words; i++) {
      heap[m * words + i] = next(&seed);
    }
    sums[m] = sum(heap + m * words, words);
  }
  int fd = open("/run/tick", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    perror("ctr-counter: /run/tick");
    return 1;
  }
  int bad = 0;
  for (unsigned long n = 1;; n++) {
    if (heap_mb) {
      size_t m = n % heap_mb;
      bad |= sum(heap + m * words, words) != sums[m];
    }
    char line[96];
    int len = snprintf(line, sizeof line, "tick %lu heap %zu MiB %s\n", n, heap_mb, bad ? "BAD" : "ok");
    if (pwrite(fd, line, (size_t)len, 0) != len || ftruncate(fd, len) != 0) {
      return 1;
    }
    struct timespec t = {0, 200000000};
    nanosleep(&t, NULL);
  }
}
