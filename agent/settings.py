"""Settings tree of the node agent."""

from enum import StrEnum
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from temper.service import ServiceSettings


class CgroupDriver(StrEnum):
    """The kubelet's cgroup driver, which decides how pod cgroups are named."""

    SYSTEMD = "systemd"
    CGROUPFS = "cgroupfs"


class AgentSettings(ServiceSettings):
    """Settings of ``temper agent``; environment variables start with TEMPER_AGENT_."""

    node_name: str = Field(
        min_length=1,
        description="Name of the Node this agent serves (in a pod: spec.nodeName from the "
        "downward API)",
    )
    node_cpus: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="CPU count used to size layers; default: the Node's allocatable CPU, "
        "else the CPUs online on this machine",
    )
    config_path: Path = Field(
        Path("/run/temper/scx_layered.json"),
        description="File the generated scx_layered layer config is written to",
    )
    sysfs_root: Path = Field(
        Path("/sys"), description="Root of sysfs, where sched_ext support is detected"
    )
    cgroup_root: Path = Field(
        Path("/sys/fs/cgroup"), description="Mount point of the cgroup hierarchy"
    )
    cgroup_driver: CgroupDriver = Field(
        CgroupDriver.SYSTEMD, description="The kubelet's cgroup driver: systemd or cgroupfs"
    )
    publish_interval_seconds: float = Field(
        10.0,
        ge=1.0,
        le=600.0,
        description="Seconds between tier-load publications on the Node; readers treat a "
        "value older than three intervals as missing",
    )
    debounce_seconds: float = Field(
        2.0,
        ge=0.0,
        le=300.0,
        description="Seconds of quiet after pod churn before the layer config is recomputed",
    )
    state_dir: Path = Field(
        Path("/run/temper"),
        description="Directory for the scheduler's state file and log, kept across agent restarts",
    )
    scx_layered_path: str = Field(
        "scx_layered", description="Path or name (looked up in PATH) of the scx_layered binary"
    )
    safe_mode_namespace: str = Field(
        "temper",
        description="Namespace whose temper.codes/safe-mode-requested annotation stops "
        "enforcement on every node",
    )
    min_restart_interval_seconds: float = Field(
        30.0,
        ge=0.0,
        description="Minimum seconds between scheduler restarts caused by config changes; each "
        "restart runs the stock scheduler for a moment",
    )
    scheduler_attach_timeout_seconds: float = Field(
        30.0,
        ge=1.0,
        le=900.0,
        description="Seconds a starting scx_layered may take to load its BPF programs and "
        "attach before it is stopped and the start counts as failed",
    )
    stop_scheduler_on_exit: bool = Field(
        True,
        description="Stop scx_layered when the agent shuts down (SIGTERM), returning the node "
        "to the stock scheduler; a crashed agent leaves it running for the next agent to adopt",
    )
    stock_kernel_mode: bool = Field(
        False,
        description="On kernels without sched_ext, give low and background pods SCHED_IDLE "
        "treatment through cgroup cpu.idle and raise the CPU weight of critical and high "
        "pods; every changed value is restored on stop",
    )
    stock_kernel_critical_cpu_shares: int = Field(
        262144,
        ge=2,
        le=262144,
        description="Stock-kernel mode: CPU weight given to critical pod cgroups, in cgroup "
        "v1 cpu.shares units (cgroup v2 cpu.weight is converted as the kubelet does); a pod "
        "whose kubelet value is higher keeps it; 2 leaves every critical pod unchanged",
    )
    stock_kernel_high_cpu_shares: int = Field(
        8192,
        ge=2,
        le=262144,
        description="Stock-kernel mode: CPU weight given to high pod cgroups, in cpu.shares "
        "units like stock_kernel_critical_cpu_shares and at most that value",
    )
    profile_dirs: tuple[Path, ...] = Field(
        (),
        description="Directories of custom workload profiles (*.yaml), reread whenever their "
        "files change; a profile there replaces the builtin of the same name",
    )
    # -- scx_layered statistics (agent/scxmonitor.py) -----------------------------------------
    scx_stats_enabled: bool = Field(
        True,
        description="Read scx_layered's statistics socket while it is attached, export the "
        "per-layer metrics and run the layer_mismatch check",
    )
    scx_stats_socket_path: Path = Field(
        Path("/var/run/scx/root/stats"),
        description="Unix socket on which scx_layered serves its statistics (its default path)",
    )
    scx_stats_interval_seconds: float = Field(
        10.0,
        ge=1.0,
        le=600.0,
        description="Seconds between two reads of scx_layered's statistics; utilisation and "
        "event counts cover the time between two reads",
    )
    scx_stats_timeout_seconds: float = Field(
        5.0,
        gt=0.0,
        le=60.0,
        description="Seconds to connect to the statistics socket and receive one response",
    )
    listen_address: str = Field(
        "127.0.0.1", description="Address of the /metrics, /healthz and /readyz server"
    )
    port: int = Field(9402, ge=0, le=65535, description="TCP port of that server (0: any)")
    # -- observation (agent/observe) ---------------------------------------------------------
    observe_enabled: bool = Field(
        True, description="Sample every container thread and serve /observe and /trace"
    )
    observe_interval_seconds: float = Field(
        1.0, ge=0.1, le=60.0, description="Seconds between two samples of the container threads"
    )
    observe_procfs_detail_interval_seconds: float = Field(
        30.0,
        ge=0.1,
        le=600.0,
        description="Without BPF: seconds between two reads of a thread's stat and status "
        "files (name, last CPU, context switches), for threads that ran meanwhile; CPU time, "
        "run-queue delay and timeslices are read every interval",
    )
    observe_procfs_listing_interval_seconds: float = Field(
        2.0,
        ge=0.1,
        le=10.0,
        description="Without BPF: seconds between two reads of a container cgroup's thread "
        "list: new threads are found up to this much later (exited ones at the next sample)",
    )
    observe_max_threads: int = Field(
        16384,
        ge=64,
        le=1_048_576,
        description="Maximum number of threads tracked (threads beyond it are counted, not "
        "observed); also the number of BPF thread slots",
    )
    bpf_enabled: bool = Field(
        True,
        description="Load the BPF scheduler programs (run-queue delay histograms, placement "
        "linter); without them, or when loading fails, only procfs is read",
    )
    bpf_kernel_headers_path: Path | None = Field(
        None,
        description="Kernel header directory BCC compiles against when /lib/modules/<release>/"
        "build is missing; default: the newest /usr/src/linux-headers-* directory",
    )
    bpf_kernel_btf_path: Path = Field(
        Path("/sys/kernel/btf/vmlinux"),
        description="The running kernel's BTF type information, from which the BPF programs "
        "take the offsets of the task fields they read (CONFIG_DEBUG_INFO_BTF); without it "
        "only procfs is read",
    )
    observe_protected_cpus: str = Field(
        "",
        pattern=r"^[0-9,\-]*$",
        description="CPU list (for example 2-3) of the critical layer's protected CPUs, "
        "checked by the protected_fallback invariant; empty: no CPU is protected",
    )
    open_reserve_grace_seconds: float = Field(
        0.001,
        ge=0.0,
        le=1.0,
        description="Seconds a critical thread may wait on a run queue before a batch thread "
        "running meanwhile counts as an open_reserve violation",
    )
    trace_max_seconds: float = Field(
        30.0,
        gt=0.0,
        le=600.0,
        description="Maximum length of a /trace scheduler capture, in seconds",
    )
    trace_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=64 * 1024,
        le=4 * 1024 * 1024 * 1024,
        description="Largest trace file /trace returns, in bytes; also bounds the kernel "
        "trace buffer",
    )
    tracefs_path: Path | None = Field(
        None,
        description="Mount point of tracefs; default: /sys/kernel/tracing, else "
        "/sys/kernel/debug/tracing",
    )

    @field_validator("stock_kernel_high_cpu_shares")
    @classmethod
    def _check_high_cpu_shares(cls, shares: int, info: ValidationInfo) -> int:
        critical = info.data.get("stock_kernel_critical_cpu_shares")
        if critical is not None and shares > critical:
            raise ValueError(
                f"{shares} is above stock_kernel_critical_cpu_shares ({critical}), which would "
                "put high pods ahead of critical ones: lower it or raise the critical value"
            )
        return shares
