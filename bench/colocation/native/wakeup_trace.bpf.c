// SPDX-License-Identifier: GPL-2.0
/*
 * wakeup_trace: why a waking task waits behind a running one (bench/colocation/wakeuptrace.py).
 *
 * Traces the sched_wakeup and sched_switch raw tracepoints. It watches each wake-up of a task
 * named WAKER that the kernel handles on the CPU where a task named RUNNER is running.
 * trace_sched_wakeup fires right after the wake-up preemption check, so the program reads
 * there the running task's thread_info flags and the EEVDF state of the two scheduling
 * entities that the check compared. Those are the nearest ancestors of the two tasks on one
 * cfs_rq, as the kernel's find_matching_se() finds them. At the waker's next switch-in it reports the wait to user
 * space when the wait exceeded LONG_WAIT_NS, when no reschedule was asked for, or for every
 * SAMPLE_EVERY-th wake-up, and counts every wake-up.
 *
 * Kernel: Linux 6.18 field names (cfs_rq sum_w_vruntime, sum_weight and zero_vruntime;
 * sched_entity vprot), CONFIG_FAIR_GROUP_SCHED and BTF. The byte offsets of every field read
 * come from the running kernel's BTF as -D flags (wakeuptrace.py), so the program compiles
 * only where these fields exist.
 */

#define NAME_LEN 16

/* One side of the comparison: the sched_entity fields the kernel's decision depends on. */
struct entity {
    u64 weight;     /* load.weight, scaled up by the kernel's fixed-point shift */
    u64 deadline;
    u64 vruntime;
    u64 vlag;       /* vprot while the entity is running */
    u64 slice;
    u32 on_rq;
    u32 depth;
};

struct wakeup {
    u64 at_ns;
    u64 flags;      /* the running task's thread_info flags after the check */
    struct entity running;
    struct entity waker;
    s64 sum_w_vruntime;
    u64 sum_weight;
    u64 zero_vruntime;
    u32 running_is_curr;  /* the running side is the cfs_rq's curr */
    u32 sampled;
};

struct report {
    u64 wait_ns;
    struct wakeup wakeup;
};

/* Index 0: WAKER, index 1: RUNNER, written by user space before attaching. */
struct name { char text[NAME_LEN]; };
BPF_ARRAY(names, struct name, 2);
BPF_HASH(pending, u32, struct wakeup, 16384);
/* Index 0: wake-ups onto a RUNNER, 1: of those with no reschedule asked for. */
BPF_ARRAY(totals, u64, 2);
BPF_PERF_OUTPUT(reports);

static __always_inline int named(u8 *task, u32 index)
{
    struct name *want = names.lookup(&index);
    char comm[NAME_LEN] = {};
    if (!want)
        return 0;
    bpf_probe_read_kernel(comm, NAME_LEN, task + TASK_COMM);
#pragma unroll
    for (int i = 0; i < NAME_LEN; i++) {
        if (comm[i] != want->text[i])
            return 0;
        if (comm[i] == 0)
            return 1;
    }
    return 1;
}

static __always_inline u8 *read_pointer(u8 *address)
{
    u8 *value = NULL;
    bpf_probe_read_kernel(&value, sizeof(value), address);
    return value;
}

static __always_inline u32 entity_depth(u8 *se)
{
    u32 depth = 0;
    bpf_probe_read_kernel(&depth, sizeof(depth), se + SE_DEPTH);
    return depth;
}

static __always_inline void read_entity(u8 *se, struct entity *out)
{
    u8 on_rq = 0;
    bpf_probe_read_kernel(&out->weight, 8, se + SE_WEIGHT);
    bpf_probe_read_kernel(&out->deadline, 8, se + SE_DEADLINE);
    bpf_probe_read_kernel(&out->vruntime, 8, se + SE_VRUNTIME);
    bpf_probe_read_kernel(&out->vlag, 8, se + SE_VLAG);
    bpf_probe_read_kernel(&out->slice, 8, se + SE_SLICE);
    bpf_probe_read_kernel(&on_rq, 1, se + SE_ON_RQ);
    out->on_rq = on_rq;
    out->depth = entity_depth(se);
}

static __always_inline void count(u32 index)
{
    u64 *total = totals.lookup(&index);
    if (total)
        __sync_fetch_and_add(total, 1);
}

RAW_TRACEPOINT_PROBE(sched_wakeup)
{
    u8 *waker = (u8 *)ctx->args[0];
    u32 cpu = bpf_get_smp_processor_id(), waker_cpu = 0;
    bpf_probe_read_kernel(&waker_cpu, sizeof(waker_cpu), waker + TASK_CPU);
    if (cpu != waker_cpu || !named(waker, 0))
        return 0;
    u8 *running = (u8 *)bpf_get_current_task();
    if (!named(running, 1))
        return 0;

    /* find_matching_se(): climb to equal depth, then until both share a cfs_rq. */
    u8 *se = running + TASK_SE, *pse = waker + TASK_SE;
    for (int i = 0; i < 8 && entity_depth(se) > entity_depth(pse); i++)
        se = read_pointer(se + SE_PARENT);
    for (int i = 0; i < 8 && se && entity_depth(pse) > entity_depth(se); i++)
        pse = read_pointer(pse + SE_PARENT);
    for (int i = 0; i < 8 && se && pse; i++) {
        if (read_pointer(se + SE_CFS_RQ) == read_pointer(pse + SE_CFS_RQ))
            break;
        se = read_pointer(se + SE_PARENT);
        pse = read_pointer(pse + SE_PARENT);
    }
    if (!se || !pse)
        return 0;

    struct wakeup record = {};
    record.at_ns = bpf_ktime_get_ns();
    bpf_probe_read_kernel(&record.flags, 8, running + TASK_FLAGS);
    read_entity(se, &record.running);
    read_entity(pse, &record.waker);
    u8 *cfs_rq = read_pointer(se + SE_CFS_RQ);
    bpf_probe_read_kernel(&record.sum_w_vruntime, 8, cfs_rq + CFS_RQ_SUM_W_VRUNTIME);
    bpf_probe_read_kernel(&record.sum_weight, 8, cfs_rq + CFS_RQ_SUM_WEIGHT);
    bpf_probe_read_kernel(&record.zero_vruntime, 8, cfs_rq + CFS_RQ_ZERO_VRUNTIME);
    record.running_is_curr = read_pointer(cfs_rq + CFS_RQ_CURR) == se;

    u32 all = 0;
    u64 *seen = totals.lookup(&all);
    record.sampled = seen && (*seen % SAMPLE_EVERY) == 0;
    count(0);
    if (!(record.flags & NEED_RESCHED_MASK))
        count(1);
    u32 pid = 0;
    bpf_probe_read_kernel(&pid, sizeof(pid), waker + TASK_PID);
    pending.update(&pid, &record);
    return 0;
}

RAW_TRACEPOINT_PROBE(sched_switch)
{
    u8 *next = (u8 *)ctx->args[2];
    u32 pid = 0;
    bpf_probe_read_kernel(&pid, sizeof(pid), next + TASK_PID);
    struct wakeup *record = pending.lookup(&pid);
    if (!record)
        return 0;
    u64 wait = bpf_ktime_get_ns() - record->at_ns;
    if (wait > LONG_WAIT_NS || record->sampled || !(record->flags & NEED_RESCHED_MASK)) {
        struct report out = {};
        out.wait_ns = wait;
        out.wakeup = *record;
        reports.perf_submit(ctx, &out, sizeof(out));
    }
    pending.delete(&pid);
    return 0;
}
