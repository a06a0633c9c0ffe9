/*
 * Open-loop memcached load generator (text protocol over TCP) for the colocation benchmark.
 *
 * Requests arrive as a Poisson process at a fixed mean rate, are spread round-robin over the
 * connections and are sent as soon as they are due, whether or not earlier responses are
 * back (memcached answers in order on each connection, so responses are matched FIFO). Each
 * latency runs from the request's SCHEDULED send time to the read that completed its
 * response, so a stall of the generator or of the server counts against every request it
 * delays: there is no coordinated omission.
 *
 * Only requests scheduled after the warm-up are recorded. Output files, native-endian
 * uint64 nanoseconds, one value per recorded request, in completion order:
 *   PREFIX.latency   completion - scheduled send time
 *   PREFIX.service   completion - actual send time (what a closed-loop client would report)
 *   PREFIX.lateness  actual send time - scheduled send time (the generator's own delay)
 * A request still unanswered when the drain time is over counts as a timeout, with the time
 * waited so far as its latency (a lower bound). A summary goes to stdout as one JSON object.
 *
 * Usage: loadgen -p PORT -r RATE -o PREFIX [-a ADDR] [-c CONNECTIONS] [-w WARMUP_S]
 *                [-d DURATION_S] [-D DRAIN_S] [-k KEYS] [-v VALUE_BYTES] [-s SET_PERMILLE]
 *                [-S SEED]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_CAP (256 * 1024)
#define QUEUE_CAP (1u << 17) /* outstanding requests per connection, a power of two */
#define MAX_CONNECTIONS 256
#define MAX_VALUE_BYTES 4096

struct request {
    uint64_t scheduled;
    uint64_t sent;
    int measured;
};

struct connection {
    int fd;
    char *out;
    size_t out_len, out_cap;
    int watching_out;
    struct request *queue;
    uint32_t head, tail;
    char *in;
    size_t in_len;
    size_t data_left; /* bytes of a VALUE block (plus its CRLF) still to skip */
    int got_value;    /* the response being parsed carried a VALUE block */
};

struct options {
    const char *address, *prefix;
    int port, connections;
    double rate, warmup, duration, drain;
    unsigned keys, value_bytes, set_permille;
    uint64_t seed;
};

static struct {
    uint64_t *latency, *service, *lateness;
    size_t recorded, lateness_count, capacity;
    uint64_t sent, sent_measured, completed, completed_measured, errors, misses, timeouts;
    uint64_t write_blocked, max_outstanding, outstanding;
} stats;

static int epoll_fd;
static char value_buffer[MAX_VALUE_BYTES];

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state;

static uint64_t next_random(void) {
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform01(void) { return (double)(next_random() >> 11) * 0x1.0p-53; }

static void watch(struct connection *c, int want_out) {
    struct epoll_event event = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &event) < 0) die("epoll_ctl");
    c->watching_out = want_out;
}

static void flush(struct connection *c) {
    size_t done = 0;
    while (done < c->out_len) {
        ssize_t n = write(c->fd, c->out + done, c->out_len - done);
        if (n > 0) {
            done += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            stats.write_blocked++;
            break;
        } else {
            die("write to memcached");
        }
    }
    memmove(c->out, c->out + done, c->out_len - done);
    c->out_len -= done;
    if ((c->out_len > 0) != c->watching_out) watch(c, c->out_len > 0);
}

static void append(struct connection *c, const char *data, size_t length) {
    if (c->out_len + length > c->out_cap) {
        while (c->out_len + length > c->out_cap) c->out_cap *= 2;
        c->out = realloc(c->out, c->out_cap);
        if (!c->out) die("realloc");
    }
    memcpy(c->out + c->out_len, data, length);
    c->out_len += length;
}

static void issue(struct connection *c, const struct options *o, uint64_t scheduled,
                  uint64_t now, int measured) {
    if (c->tail - c->head >= QUEUE_CAP) {
        fprintf(stderr, "loadgen: more than %u requests outstanding on one connection\n",
                QUEUE_CAP);
        exit(1);
    }
    char line[128];
    unsigned key = (unsigned)(next_random() % o->keys);
    int is_set = (next_random() % 1000) < o->set_permille;
    int length;
    if (is_set) {
        length = snprintf(line, sizeof line, "set key:%08u 0 0 %u\r\n", key, o->value_bytes);
        append(c, line, (size_t)length);
        append(c, value_buffer, o->value_bytes);
        append(c, "\r\n", 2);
    } else {
        length = snprintf(line, sizeof line, "get key:%08u\r\n", key);
        append(c, line, (size_t)length);
    }
    struct request *r = &c->queue[c->tail++ & (QUEUE_CAP - 1)];
    r->scheduled = scheduled;
    r->sent = now;
    r->measured = measured;
    stats.sent++;
    stats.outstanding++;
    if (stats.outstanding > stats.max_outstanding) stats.max_outstanding = stats.outstanding;
    if (measured) {
        stats.sent_measured++;
        if (stats.lateness_count < stats.capacity)
            stats.lateness[stats.lateness_count++] = now - scheduled;
    }
    flush(c);
}

static void record(const struct request *r, uint64_t now) {
    if (!r->measured) return;
    if (stats.recorded < stats.capacity) {
        stats.latency[stats.recorded] = now - r->scheduled;
        stats.service[stats.recorded] = now - r->sent;
        stats.recorded++;
    }
}

static void complete(struct connection *c, uint64_t now, int error) {
    if (c->head == c->tail) {
        fprintf(stderr, "loadgen: a response arrived with no request outstanding\n");
        exit(1);
    }
    struct request *r = &c->queue[c->head++ & (QUEUE_CAP - 1)];
    stats.completed++;
    stats.outstanding--;
    if (error) stats.errors++;
    if (r->measured) stats.completed_measured++;
    record(r, now);
}

static int starts_with(const char *line, size_t length, const char *word) {
    size_t n = strlen(word);
    return length >= n && memcmp(line, word, n) == 0;
}

static void parse(struct connection *c, uint64_t now) {
    size_t pos = 0;
    for (;;) {
        if (c->data_left) {
            size_t take = c->in_len - pos < c->data_left ? c->in_len - pos : c->data_left;
            pos += take;
            c->data_left -= take;
            if (c->data_left) break;
            continue;
        }
        char *line = c->in + pos;
        char *eol = memmem(line, c->in_len - pos, "\r\n", 2);
        if (!eol) break;
        size_t length = (size_t)(eol - line);
        pos += length + 2;
        if (starts_with(line, length, "VALUE ")) {
            *eol = '\0';
            unsigned long bytes = 0;
            if (sscanf(line, "VALUE %*s %*u %lu", &bytes) != 1) {
                fprintf(stderr, "loadgen: malformed VALUE line\n");
                exit(1);
            }
            c->data_left = bytes + 2;
            c->got_value = 1;
        } else if (starts_with(line, length, "END")) {
            if (!c->got_value) stats.misses++;
            c->got_value = 0;
            complete(c, now, 0);
        } else if (starts_with(line, length, "STORED")) {
            complete(c, now, 0);
        } else {
            complete(c, now, 1); /* ERROR, CLIENT_ERROR, SERVER_ERROR, NOT_STORED */
        }
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
}

static void receive(struct connection *c) {
    if (c->in_len == IN_CAP) {
        fprintf(stderr, "loadgen: a response line is longer than the read buffer\n");
        exit(1);
    }
    ssize_t n = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);
    uint64_t now = now_ns();
    if (n == 0) {
        fprintf(stderr, "loadgen: memcached closed the connection\n");
        exit(1);
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        die("read from memcached");
    }
    c->in_len += (size_t)n;
    parse(c, now);
}

static int connect_to(const char *address, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, address, &sa.sin_addr) != 1) {
        fprintf(stderr, "loadgen: invalid IPv4 address %s\n", address);
        exit(2);
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect to memcached");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void write_array(const char *prefix, const char *suffix, const uint64_t *values,
                        size_t count) {
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", prefix, suffix);
    FILE *f = fopen(path, "wb");
    if (!f) die(path);
    if (count && fwrite(values, sizeof *values, count, f) != count) die(path);
    if (fclose(f) != 0) die(path);
}

static void usage(const char *program) {
    fprintf(stderr,
            "usage: %s -p PORT -r RATE -o PREFIX [-a ADDR] [-c CONNECTIONS] [-w WARMUP_S]\n"
            "       [-d DURATION_S] [-D DRAIN_S] [-k KEYS] [-v VALUE_BYTES] [-s SET_PERMILLE]"
            " [-S SEED]\n",
            program);
    exit(2);
}

int main(int argc, char **argv) {
    struct options o = {.address = "127.0.0.1", .connections = 8, .warmup = 2, .duration = 8,
                        .drain = 2, .keys = 10000, .value_bytes = 100, .set_permille = 100,
                        .seed = 1};
    int opt;
    while ((opt = getopt(argc, argv, "a:p:r:c:w:d:D:k:v:s:S:o:")) != -1) {
        switch (opt) {
        case 'a': o.address = optarg; break;
        case 'p': o.port = atoi(optarg); break;
        case 'r': o.rate = atof(optarg); break;
        case 'c': o.connections = atoi(optarg); break;
        case 'w': o.warmup = atof(optarg); break;
        case 'd': o.duration = atof(optarg); break;
        case 'D': o.drain = atof(optarg); break;
        case 'k': o.keys = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'v': o.value_bytes = (unsigned)strtoul(optarg, NULL, 10); break;
        case 's': o.set_permille = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'S': o.seed = strtoull(optarg, NULL, 10); break;
        case 'o': o.prefix = optarg; break;
        default: usage(argv[0]);
        }
    }
    if (!o.prefix || o.port <= 0 || o.rate <= 0 || o.connections <= 0 ||
        o.connections > MAX_CONNECTIONS || o.keys == 0 || o.value_bytes > MAX_VALUE_BYTES ||
        o.duration <= 0 || o.warmup < 0 || o.drain < 0)
        usage(argv[0]);

    /* Wake-ups as close to the deadline as the kernel allows: the default 50 us slack would
     * add to every scheduled send. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    rng_state = o.seed;
    memset(value_buffer, 'v', sizeof value_buffer);
    stats.capacity = (size_t)(o.rate * o.duration * 1.5) + 4096;
    stats.latency = calloc(stats.capacity, sizeof(uint64_t));
    stats.service = calloc(stats.capacity, sizeof(uint64_t));
    stats.lateness = calloc(stats.capacity, sizeof(uint64_t));
    if (!stats.latency || !stats.service || !stats.lateness) die("calloc");

    epoll_fd = epoll_create1(0);
    if (epoll_fd < 0) die("epoll_create1");
    struct connection *conns = calloc((size_t)o.connections, sizeof *conns);
    for (int i = 0; i < o.connections; i++) {
        struct connection *c = &conns[i];
        c->fd = connect_to(o.address, o.port);
        c->out_cap = 64 * 1024;
        c->out = malloc(c->out_cap);
        c->in = malloc(IN_CAP);
        c->queue = calloc(QUEUE_CAP, sizeof *c->queue);
        if (!c->out || !c->in || !c->queue) die("malloc");
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, c->fd, &event) < 0) die("epoll_ctl");
    }

    const double gap_mean_ns = 1e9 / o.rate;
    const uint64_t start = now_ns() + 10000000ull;
    const uint64_t warm_end = start + (uint64_t)(o.warmup * 1e9);
    const uint64_t end = warm_end + (uint64_t)(o.duration * 1e9);
    const uint64_t drain_end = end + (uint64_t)(o.drain * 1e9);
    double next = (double)start;
    int round_robin = 0;
    struct epoll_event events[64];
    uint64_t now = now_ns();
    for (;;) {
        while ((uint64_t)next <= now && (uint64_t)next < end) {
            uint64_t scheduled = (uint64_t)next;
            issue(&conns[round_robin], &o, scheduled, now_ns(), scheduled >= warm_end);
            round_robin = (round_robin + 1) % o.connections;
            next += -log1p(-uniform01()) * gap_mean_ns;
            now = now_ns();
        }
        int sending = (uint64_t)next < end;
        if (!sending && (stats.outstanding == 0 || now >= drain_end)) break;
        uint64_t deadline = sending ? (uint64_t)next : drain_end;
        uint64_t wait = deadline > now ? deadline - now : 0;
        struct timespec timeout = {.tv_sec = (time_t)(wait / 1000000000ull),
                                   .tv_nsec = (long)(wait % 1000000000ull)};
        int n = epoll_pwait2(epoll_fd, events, 64, &timeout, NULL);
        if (n < 0 && errno != EINTR) die("epoll_pwait2");
        for (int i = 0; i < n; i++) {
            struct connection *c = events[i].data.ptr;
            if (events[i].events & EPOLLOUT) flush(c);
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) receive(c);
        }
        now = now_ns();
    }

    /* Requests never answered: their wait so far is a lower bound of their latency. */
    now = now_ns();
    for (int i = 0; i < o.connections; i++) {
        struct connection *c = &conns[i];
        while (c->head != c->tail) {
            struct request *r = &c->queue[c->head++ & (QUEUE_CAP - 1)];
            if (r->measured) stats.timeouts++;
            record(r, now);
        }
    }
    write_array(o.prefix, "latency", stats.latency, stats.recorded);
    write_array(o.prefix, "service", stats.service, stats.recorded);
    write_array(o.prefix, "lateness", stats.lateness, stats.lateness_count);
    printf("{\"target_rate\": %.1f, \"duration_seconds\": %.3f, \"connections\": %d, "
           "\"sent\": %llu, \"sent_measured\": %llu, \"completed\": %llu, "
           "\"completed_measured\": %llu, \"recorded\": %zu, \"errors\": %llu, "
           "\"misses\": %llu, \"timeouts\": %llu, \"write_blocked\": %llu, "
           "\"max_outstanding\": %llu}\n",
           o.rate, o.duration, o.connections, (unsigned long long)stats.sent,
           (unsigned long long)stats.sent_measured, (unsigned long long)stats.completed,
           (unsigned long long)stats.completed_measured, stats.recorded,
           (unsigned long long)stats.errors, (unsigned long long)stats.misses,
           (unsigned long long)stats.timeouts,
           (unsigned long long)stats.write_blocked, (unsigned long long)stats.max_outstanding);
    return 0;
}
