// SPDX-License-Identifier: GPL-2.0
/*
 * sched_observe: run-queue delay and CPU placement of the container threads the agent tracks.
 *
 * Traces: the sched_switch raw tracepoint for run-queue delays, CPU time and placement (a raw
 * tracepoint skips filling an event record: the program gets the kernel's arguments as they
 * are). The sched:sched_process_fork, sched:sched_process_exit and cgroup:cgroup_attach_task
 * tracepoints tell user space when the thread set of the pods may have changed. Delays and CPU
 * time are not timed here: at each switch-out of a tracked thread the program reads two fields
 * of the outgoing task (`current`), se.sum_exec_runtime and sched_info.run_delay, and counts
 * their growth since the thread's previous switch-out, so the totals equal the kernel's own
 * (/proc/<tid>/schedstat) and each wait lands in the histogram as the kernel measured it. It
 * copies the task's context switch counts, nvcsw and nivcsw, the same way. The offsets of
 * these fields and of pid come from the running kernel's BTF (agent/observe/btf.py),
 * not from the headers BCC compiles against, which may belong to another kernel version. The
 * clock is read only where an interval needs it: critical threads getting a CPU, batch
 * threads leaving one, and the placement linter's SMT and protected-CPU intervals.
 *
 * Kernel: Linux 5.11 or newer (bpf_get_current_task_btf; mmap-able array maps since 5.5), with
 * CONFIG_DEBUG_INFO_BTF (/sys/kernel/btf/vmlinux) and CONFIG_SCHED_INFO (run_delay).
 *
 * Measured overhead (2-vCPU VM, AMD EPYC, Linux 6.18, 2026-12-05, docs/benchmarks.md): in
 * bench/switch_cost.py, two tracked processes pinned to one CPU pass a byte through pipes.
 * The program adds about 315 ns to each context switch with its wake-up there (265 to 402 ns
 * in five runs), tracepoint entry included. The previous version of this program
 * (sched_wakeup and sched_switch tracepoints, waits timed with bpf_ktime_get_ns) added about
 * 420 ns (359 to 432 ns in eight runs). Inside the program, with kernel.bpf_stats_enabled,
 * a run takes about 200 ns there. In bench/observe_overhead.py it takes 420 to 460 ns, because
 * 1,000 threads spread the map entries it touches over many cache lines: 0.65% to 0.70% of one
 * core at 14,000 to 16,000 switches a second.
 *
 * User space (agent/observe/bpfprobe.py) owns the thread set: through mmap it hands each tracked
 * thread a slot in `thread_stats` (with its pod's group index and tier) and publishes the slot
 * in `tid_slot`. Every map is an mmap-ed array, so user space reads and writes them without
 * system calls. Folding to pods happens here through the group index, folding to tiers in user
 * space.
 *
 * Compile-time constants, passed as -D flags by the loader: PID_MAX (size of tid_slot: 4 bytes
 * of kernel memory per possible pid, 16 MiB at the 4194304 maximum), MAX_THREADS, MAX_GROUPS,
 * MAX_CPUS, OPEN_RESERVE_GRACE_NS, and the byte offsets of the task fields read, from BTF:
 * TASK_PID_OFFSET, TASK_SUM_EXEC_RUNTIME_OFFSET, TASK_RUN_DELAY_OFFSET, TASK_NVCSW_OFFSET and
 * TASK_NIVCSW_OFFSET.
 */

/* Tier codes are the tier's rank plus one (critical 1 ... background 5), so that the zeroed
 * state of a fresh map means "no tracked thread". */
#define TIER_NONE 0
#define TIER_CRITICAL 1
#define TIER_LOW 4
#define TIER_BACKGROUND 5

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

/* One tracked thread. Before user space publishes the slot in tid_slot, it zeroes the slot and
 * writes group, tier and the task's schedstat values into task_runtime_ns and task_run_delay_ns.
 * runtime_ns, run_delay_ns and timeslices then count from zero. */
struct thread_stats {
    u64 runtime_ns;
    u64 run_delay_ns;
    u64 timeslices;
    u64 voluntary_switches;   /* the task's nvcsw when it last left a CPU (0: not yet) */
    u64 involuntary_switches; /* the task's nivcsw then */
    u64 task_runtime_ns;    /* the task's sum_exec_runtime when it last left a CPU */
    u64 task_run_delay_ns;  /* the task's sched_info.run_delay when it last left a CPU */
    u64 last_in_ns;         /* critical threads: clock when the thread last got a CPU */
    u64 batch_out_at_in_ns; /* critical threads: last batch switch-out before that */
    u32 last_cpu;
    u32 group;
    u32 tier;
    u32 flags;              /* THREAD_ON_CPU, THREAD_BATCH_RAN */
};

#define THREAD_ON_CPU 1
#define THREAD_BATCH_RAN 2

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

/* Return the clock, reading it only on the first call of an event. */
static __always_inline u64 clock_now(u64 *now)
{
    if (!*now)
        *now = bpf_ktime_get_ns();
    return *now;
}

/* The outgoing thread, which is still `current` at this tracepoint. The kernel has already
 * added its last run to se.sum_exec_runtime and counted this switch in nvcsw or nivcsw. Its
 * sched_info.run_delay includes the wait that preceded this run. So the differences to the
 * values of the previous switch-out are the run and the wait. */
static __always_inline void switch_out(struct thread_stats *stats, u8 *task, u32 cpu)
{
    u64 runtime = *(u64 *)(task + TASK_SUM_EXEC_RUNTIME_OFFSET);
    u64 delay_total = *(u64 *)(task + TASK_RUN_DELAY_OFFSET);
    u32 group = stats->group;

    if (runtime > stats->task_runtime_ns) {
        u64 ran = runtime - stats->task_runtime_ns;
        stats->runtime_ns += ran;
        u32 index = group * MAX_CPUS + cpu;
        u64 *placed = group_cpu_ns.lookup(&index);
        if (placed)
            *placed += ran;
        stats->task_runtime_ns = runtime;
    }
    if (delay_total >= stats->task_run_delay_ns) {
        u64 delay = delay_total - stats->task_run_delay_ns;
        stats->task_run_delay_ns = delay_total;
        stats->run_delay_ns += delay;
        struct delay_hist *hist = group_hist.lookup(&group);
        if (hist) {
            /* The mask (DELAY_SLOTS is a power of two) bounds the index for the verifier. */
            u64 bucket = delay_slot(delay) & (DELAY_SLOTS - 1);
            __sync_fetch_and_add(&hist->slots[bucket], 1);
            __sync_fetch_and_add(&hist->sum_ns, delay);
            __sync_fetch_and_add(&hist->count, 1);
        }
        /* Open reserve: the wait began at last_in_ns - delay; did batch work run during it? */
        u64 arrived = stats->last_in_ns;
        if (stats->tier == TIER_CRITICAL && delay > OPEN_RESERVE_GRACE_NS && arrived > delay) {
            if ((stats->flags & THREAD_BATCH_RAN) || stats->batch_out_at_in_ns > arrived - delay) {
                counter_add(OPEN_RESERVES, 1);
                counter_add(OPEN_RESERVE_NS, delay);
            }
        }
    }
    stats->flags = 0;
    stats->voluntary_switches = *(u64 *)(task + TASK_NVCSW_OFFSET);
    stats->involuntary_switches = *(u64 *)(task + TASK_NIVCSW_OFFSET);
}

/* The incoming thread. For a critical one, remember when it arrived and whether batch work was
 * running then or stopped last, for the open-reserve check at its switch-out. */
static __always_inline void switch_in(struct thread_stats *stats, u32 cpu, u64 *now)
{
    u32 flags = THREAD_ON_CPU;
    if (stats->tier == TIER_CRITICAL) {
        u32 running_index = BATCH_RUNNING, out_index = LAST_BATCH_OUT_NS;
        u64 *running = counters.lookup(&running_index);
        u64 *last_out = counters.lookup(&out_index);
        if (running && (s64)*running > 0)
            flags |= THREAD_BATCH_RAN;
        stats->batch_out_at_in_ns = last_out ? *last_out : 0;
        stats->last_in_ns = clock_now(now);
    }
    stats->flags = flags;
    stats->timeslices += 1;
    stats->last_cpu = cpu;
}

/* The raw tracepoint gets the arguments of trace_sched_switch(preempt, prev, next, ...) without
 * an event record. prev is `current`, which bpf_get_current_task_btf() returns as a pointer the
 * program may read directly. next is an untyped pointer, so its pid is read with a helper. */
RAW_TRACEPOINT_PROBE(sched_switch)
{
    u32 cpu = bpf_get_smp_processor_id();
    struct cpu_state *here = cpu_state.lookup(&cpu);
    if (!here)
        return 0;
    u8 *prev_task = (u8 *)bpf_get_current_task_btf();
    u32 prev_pid = *(u32 *)(prev_task + TASK_PID_OFFSET);
    u32 next_pid = 0;
    bpf_probe_read_kernel(&next_pid, sizeof(next_pid), (u8 *)ctx->args[2] + TASK_PID_OFFSET);
    struct thread_stats *prev = tracked(prev_pid);
    struct thread_stats *next = tracked(next_pid);
    u32 old_tier = here->tier;
    if (!prev && !next && old_tier == TIER_NONE)
        return 0;
    u64 now = 0;

    struct cpu_state *sibling = NULL;
    s64 *sibling_cpu = cpu_sibling.lookup(&cpu);
    if (sibling_cpu && *sibling_cpu >= 0 && *sibling_cpu < MAX_CPUS) {
        u32 other = (u32)*sibling_cpu;
        sibling = cpu_state.lookup(&other);
    }
    u64 *protected_flag = cpu_protected.lookup(&cpu);
    int protected_cpu = protected_flag && *protected_flag;

    /* Close the interval of the thread that leaves this CPU. since_ns is 0 where no check
     * needed the interval when it opened. */
    u64 since = here->since_ns;
    if (since && sibling && collide(old_tier, sibling->tier) && sibling->since_ns) {
        u64 start = since > sibling->since_ns ? since : sibling->since_ns;
        if (clock_now(&now) > start)
            counter_add(SMT_COLLISION_NS, now - start);
    }
    if (since && protected_cpu && old_tier != TIER_NONE && old_tier != TIER_CRITICAL &&
        clock_now(&now) > since)
        counter_add(PROTECTED_FALLBACK_NS, now - since);
    if (is_batch(old_tier)) {
        counter_add(BATCH_RUNNING, (u64)-1);
        u32 out_index = LAST_BATCH_OUT_NS;
        u64 *last_out = counters.lookup(&out_index);
        if (last_out)
            *last_out = clock_now(&now);
    }
    if (prev)
        switch_out(prev, prev_task, cpu);

    /* Open the interval of the thread that arrives. */
    u32 new_tier = TIER_NONE;
    if (next) {
        new_tier = next->tier;
        switch_in(next, cpu, &now);
    }
    here->tier = new_tier;
    int timed = (sibling && (new_tier == TIER_CRITICAL || is_batch(new_tier))) ||
                (protected_cpu && new_tier != TIER_NONE && new_tier != TIER_CRITICAL);
    here->since_ns = timed ? clock_now(&now) : 0;
    if (is_batch(new_tier))
        counter_add(BATCH_RUNNING, 1);
    if (sibling && collide(new_tier, sibling->tier))
        counter_add(SMT_COLLISIONS, 1);
    if (protected_cpu && new_tier != TIER_NONE && new_tier != TIER_CRITICAL)
        counter_add(PROTECTED_FALLBACKS, 1);
    return 0;
}
