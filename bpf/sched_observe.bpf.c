// SPDX-License-Identifier: GPL-2.0
/*
 * sched_observe: run-queue delay and CPU placement of the container threads the agent tracks.
 *
 * Traces: the sched:sched_wakeup, sched:sched_wakeup_new and sched:sched_switch tracepoints for
 * delays, CPU time and placement. The sched:sched_process_fork, sched:sched_process_exit and
 * cgroup:cgroup_attach_task tracepoints tell user space when the thread set of the pods may
 * have changed. It reads only tracepoint arguments (pids, prev_state), never kernel structs, so
 * headers of another kernel version compile it correctly.
 *
 * Kernel: Linux 5.5 or newer (tracepoint BPF programs, mmap-able array maps), with the
 * sched_switch format of 4.14 and later, where prev_state bit 0x100 marks a preemption.
 *
 * Measured overhead (bench/observe_overhead.py, 1,000 tracked threads waking 10 times a second,
 * 2-vCPU VM shared with other jobs, Linux 6.18, kernel.bpf_stats_enabled run_time_ns per run):
 * sched_switch 320 ns, sched_wakeup 219 ns, 0.93% of one core at 33,000 events a second. On
 * the same VM, measured once with an empty program and a clock-only program, about 75 ns of
 * each run is the statistics accounting itself and 130 ns is bpf_ktime_get_ns(). A switch
 * between two untracked tasks returns before reading the clock. Not included: the kernel's
 * cost of entering a tracepoint and copying its arguments.
 *
 * User space (agent/observe/bpfprobe.py) owns the thread set: through mmap it hands each tracked
 * thread a slot in `thread_stats` (with its pod's group index and tier) and publishes the slot
 * in `tid_slot`. Every map is an mmap-ed array, so user space reads and writes them without
 * system calls. Folding to pods happens here through the group index, folding to tiers in user
 * space.
 *
 * Compile-time constants, passed as -D flags by the loader: PID_MAX (size of tid_slot: 4 bytes
 * of kernel memory per possible pid, 16 MiB at the 4194304 maximum), MAX_THREADS, MAX_GROUPS,
 * MAX_CPUS, OPEN_RESERVE_GRACE_NS.
 */

/* Tier codes are the tier's rank plus one (critical 1 ... background 5), so that the zeroed
 * state of a fresh map means "no tracked thread". */
#define TIER_NONE 0
#define TIER_CRITICAL 1
#define TIER_LOW 4
#define TIER_BACKGROUND 5

/* prev_state bits of a task that still wants to run: none of the state bits below 0x100. */
#define STATE_BLOCKED_MASK 0xff

/* Delay histogram: slots 0-3 hold 0-3 us exactly, then four slots per power of two. */
#define DELAY_SLOTS 128

/* Indexes of the `counters` array. */
#define SMT_COLLISIONS 0
#define SMT_COLLISION_NS 1
#define PROTECTED_FALLBACKS 2
#define PROTECTED_FALLBACK_NS 3
#define OPEN_RESERVES 4
#define OPEN_RESERVE_NS 5
#define BATCH_RUNNING 6
#define LAST_BATCH_OUT_NS 7
#define MEMBERSHIP_CHANGES 8
#define COUNTERS 16

#ifndef BPF_F_MMAPABLE
#define BPF_F_MMAPABLE (1U << 10)
#endif

/* One tracked thread. User space zeroes the slot and writes group and tier before it publishes
 * the slot in tid_slot; the counters then start from zero. */
struct thread_stats {
    u64 runtime_ns;
    u64 run_delay_ns;
    u64 timeslices;
    u64 voluntary_switches;
    u64 involuntary_switches;
    u64 enqueued_ns;
    u64 last_in_ns;
    u32 last_cpu;
    u32 group;
    u32 tier;
    u32 pad;
};

struct delay_hist {
    u64 slots[DELAY_SLOTS];
    u64 sum_ns;
    u64 count;
};

/* The tier of the tracked thread running on a CPU (TIER_NONE for any other task). */
struct cpu_state {
    u32 tier;
    u32 pad;
    u64 since_ns;
};

/* Slot plus one of each tracked thread, indexed by tid (0: not tracked). An array, not a hash:
 * the lookup on every context switch is then a bounds check and an offset. */
BPF_F_TABLE("array", u32, u32, tid_slot, PID_MAX, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct thread_stats, thread_stats, MAX_THREADS, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct delay_hist, group_hist, MAX_GROUPS, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, u64, group_cpu_ns, MAX_GROUPS * MAX_CPUS, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct cpu_state, cpu_state, MAX_CPUS, BPF_F_MMAPABLE);
/* SMT sibling of each CPU, -1 for none (two-way SMT is assumed). */
BPF_F_TABLE("array", u32, s64, cpu_sibling, MAX_CPUS, BPF_F_MMAPABLE);
/* 1 for CPUs of the protected critical layer. */
BPF_F_TABLE("array", u32, u64, cpu_protected, MAX_CPUS, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, u64, counters, COUNTERS, BPF_F_MMAPABLE);

static __always_inline void counter_add(u32 index, u64 value)
{
    u64 *counter = counters.lookup(&index);
    if (counter)
        __sync_fetch_and_add(counter, value);
}

static __always_inline int is_batch(u32 tier)
{
    return tier == TIER_LOW || tier == TIER_BACKGROUND;
}

static __always_inline int collide(u32 a, u32 b)
{
    return (a == TIER_CRITICAL && is_batch(b)) || (b == TIER_CRITICAL && is_batch(a));
}

static __always_inline u32 floor_log2(u64 v)
{
    u32 r = 0;
    if (v >> 32) { v >>= 32; r += 32; }
    if (v >> 16) { v >>= 16; r += 16; }
    if (v >> 8) { v >>= 8; r += 8; }
    if (v >> 4) { v >>= 4; r += 4; }
    if (v >> 2) { v >>= 2; r += 2; }
    if (v >> 1) { r += 1; }
    return r;
}

static __always_inline u32 delay_slot(u64 delay_ns)
{
    u64 us = delay_ns / 1000;
    if (us < 4)
        return (u32)us;
    u32 exponent = floor_log2(us);
    u32 slot = 4 * (exponent - 1) + (u32)((us >> (exponent - 2)) & 3);
    return slot < DELAY_SLOTS ? slot : DELAY_SLOTS - 1;
}

static __always_inline struct thread_stats *tracked(u32 tid)
{
    u32 *slot_plus_one = tid_slot.lookup(&tid);
    if (!slot_plus_one || *slot_plus_one == 0)
        return NULL;
    u32 slot = *slot_plus_one - 1;
    return thread_stats.lookup(&slot);
}

static __always_inline void mark_enqueued(u32 tid)
{
    struct thread_stats *stats = tracked(tid);
    if (stats)
        stats->enqueued_ns = bpf_ktime_get_ns();
}

TRACEPOINT_PROBE(sched, sched_wakeup)
{
    mark_enqueued(args->pid);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new)
{
    mark_enqueued(args->pid);
    return 0;
}

/* A tracked thread started a thread or process: the new one is in the same cgroup. */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
    if (tracked(args->parent_pid))
        counter_add(MEMBERSHIP_CHANGES, 1);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    if (tracked(args->pid))
        counter_add(MEMBERSHIP_CHANGES, 1);
    return 0;
}

/* Any task moved into any cgroup (a container starting, an exec into a container). */
TRACEPOINT_PROBE(cgroup, cgroup_attach_task)
{
    counter_add(MEMBERSHIP_CHANGES, 1);
    return 0;
}

/* The outgoing thread: CPU time, context switch kind, re-queue when preempted. */
static __always_inline void switch_out(struct thread_stats *stats, long prev_state, u32 cpu,
                                       u64 now)
{
    if (stats->last_in_ns && now > stats->last_in_ns) {
        u64 ran = now - stats->last_in_ns;
        stats->runtime_ns += ran;
        u32 index = stats->group * MAX_CPUS + cpu;
        u64 *placed = group_cpu_ns.lookup(&index);
        if (placed)
            *placed += ran;
    }
    stats->last_in_ns = 0;
    if ((prev_state & STATE_BLOCKED_MASK) == 0) {
        stats->involuntary_switches += 1;
        stats->enqueued_ns = now;
    } else {
        stats->voluntary_switches += 1;
    }
}

/* The incoming thread: run-queue delay into its pod's histogram, open-reserve check. */
static __always_inline void switch_in(struct thread_stats *stats, u32 cpu, u64 now)
{
    u64 enqueued = stats->enqueued_ns;
    if (enqueued && now > enqueued) {
        u64 delay = now - enqueued;
        stats->run_delay_ns += delay;
        u32 group = stats->group;
        struct delay_hist *hist = group_hist.lookup(&group);
        if (hist) {
            /* The mask (DELAY_SLOTS is a power of two) bounds the index for the verifier. */
            u64 bucket = delay_slot(delay) & (DELAY_SLOTS - 1);
            __sync_fetch_and_add(&hist->slots[bucket], 1);
            __sync_fetch_and_add(&hist->sum_ns, delay);
            __sync_fetch_and_add(&hist->count, 1);
        }
        if (stats->tier == TIER_CRITICAL && delay > OPEN_RESERVE_GRACE_NS) {
            u32 running_index = BATCH_RUNNING, out_index = LAST_BATCH_OUT_NS;
            u64 *running = counters.lookup(&running_index);
            u64 *last_out = counters.lookup(&out_index);
            if (running && last_out && ((s64)*running > 0 || *last_out > enqueued)) {
                counter_add(OPEN_RESERVES, 1);
                counter_add(OPEN_RESERVE_NS, delay);
            }
        }
    }
    stats->enqueued_ns = 0;
    stats->timeslices += 1;
    stats->last_cpu = cpu;
    stats->last_in_ns = now;
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    u32 cpu = bpf_get_smp_processor_id();
    struct cpu_state *here = cpu_state.lookup(&cpu);
    if (!here)
        return 0;
    struct thread_stats *prev = tracked(args->prev_pid);
    struct thread_stats *next = tracked(args->next_pid);
    u32 old_tier = here->tier;
    if (!prev && !next && old_tier == TIER_NONE)
        return 0; /* no tracked thread involved: skip even the clock read */
    u64 now = bpf_ktime_get_ns();

    struct cpu_state *sibling = NULL;
    s64 *sibling_cpu = cpu_sibling.lookup(&cpu);
    if (sibling_cpu && *sibling_cpu >= 0 && *sibling_cpu < MAX_CPUS) {
        u32 other = (u32)*sibling_cpu;
        sibling = cpu_state.lookup(&other);
    }
    u64 *protected_flag = cpu_protected.lookup(&cpu);
    int protected_cpu = protected_flag && *protected_flag;

    /* Close the interval of the thread that leaves this CPU. */
    u64 since = here->since_ns;
    if (sibling && collide(old_tier, sibling->tier)) {
        u64 start = since > sibling->since_ns ? since : sibling->since_ns;
        if (now > start)
            counter_add(SMT_COLLISION_NS, now - start);
    }
    if (protected_cpu && old_tier != TIER_NONE && old_tier != TIER_CRITICAL && now > since)
        counter_add(PROTECTED_FALLBACK_NS, now - since);
    if (is_batch(old_tier)) {
        counter_add(BATCH_RUNNING, (u64)-1);
        u32 out_index = LAST_BATCH_OUT_NS;
        u64 *last_out = counters.lookup(&out_index);
        if (last_out)
            *last_out = now;
    }
    if (prev)
        switch_out(prev, args->prev_state, cpu, now);

    /* Open the interval of the thread that arrives. */
    u32 new_tier = TIER_NONE;
    if (next) {
        new_tier = next->tier;
        switch_in(next, cpu, now);
    }
    here->tier = new_tier;
    here->since_ns = now;
    if (is_batch(new_tier))
        counter_add(BATCH_RUNNING, 1);
    if (sibling && collide(new_tier, sibling->tier))
        counter_add(SMT_COLLISIONS, 1);
    if (protected_cpu && new_tier != TIER_NONE && new_tier != TIER_CRITICAL)
        counter_add(PROTECTED_FALLBACKS, 1);
    return 0;
}
