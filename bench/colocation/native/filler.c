/*
 * A CPU-bound batch filler: an xorshift64 loop that publishes its iteration count.
 *
 * Usage: filler COUNTER_FILE SLOT
 *
 * The count goes to the 8-byte slot SLOT of COUNTER_FILE, which the benchmark created and
 * reads with pread: the file is mapped shared, so a read sees the page the loop writes. The
 * count is updated every CHUNK iterations (about a millisecond), never from a signal handler.
 * The process runs until it is killed.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHUNK (1u << 18)

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s COUNTER_FILE SLOT\n", argv[0]);
        return 2;
    }
    long slot = strtol(argv[2], NULL, 10);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0 || slot < 0) {
        perror("filler: cannot open the counter file");
        return 1;
    }
    size_t length = (size_t)(slot + 1) * sizeof(uint64_t);
    uint64_t *counters = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (counters == MAP_FAILED) {
        perror("filler: cannot map the counter file");
        return 1;
    }
    volatile uint64_t sink;
    uint64_t state = 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
    uint64_t iterations = 0;
    for (;;) {
        for (unsigned i = 0; i < CHUNK; i++) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
        }
        sink = state;  /* keeps the loop from being optimised away */
        iterations += CHUNK;
        __atomic_store_n(&counters[slot], iterations, __ATOMIC_RELAXED);
    }
    (void)sink;
    return 0;
}
