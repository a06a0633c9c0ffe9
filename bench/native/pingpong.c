/* Two processes pinned to one CPU pass a byte back and forth through two pipes. Each round
 * trip is two wake-ups and two context switches. Prints both pids, waits for a line on stdin,
 * runs, then prints the mean nanoseconds per round trip.
 *
 * Usage: pingpong ROUNDS CPU
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void transfer(int from, int to)
{
    char byte = 0;
    if (read(from, &byte, 1) != 1 || write(to, &byte, 1) != 1)
        _exit(1);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s ROUNDS CPU\n", argv[0]);
        return 2;
    }
    long rounds = atol(argv[1]);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(atoi(argv[2]), &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
        perror("sched_setaffinity");
        return 1;
    }
    int ping[2], pong[2];
    if (pipe(ping) != 0 || pipe(pong) != 0) {
        perror("pipe");
        return 1;
    }
    pid_t child = fork();
    if (child == 0) {
        for (long i = 0; i < rounds; i++)
            transfer(ping[0], pong[1]);
        _exit(0);
    }
    printf("%d %d\n", (int)getpid(), (int)child);
    fflush(stdout);
    if (getchar() == EOF)
        return 1;

    char byte = 0;
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < rounds; i++) {
        if (write(ping[1], &byte, 1) != 1 || read(pong[0], &byte, 1) != 1)
            return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double elapsed = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
    printf("%.1f\n", elapsed / rounds);
    return 0;
}
