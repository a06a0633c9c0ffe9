"""The agent's main loop: watch pods and the Node, reconcile the layer config, publish."""

import asyncio
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.cgroups import CgroupLayout, CgroupVersion, detect_cgroup_version
from agent.layers import LayerPlan, compute_layer_plan
from agent.metrics import AgentMetrics
from agent.observe.wiring import Observation
from agent.podinfo import PodInfo, pod_info
from agent.profiles.resolver import ProfileResolver
from agent.scxmonitor import ScxStatsMonitor
from agent.settings import AgentSettings
from agent.stockmode import StockKernelMode
from agent.supervisor import SchedulerSupervisor, config_digest
from agent.tierload import compute_tier_load
from agent.topology import SchedExtSupport, Topology, detect_sched_ext, read_topology
from agent.validation import LayerConfigError, validate_layer_config
from temper import annotations
from temper.errors import InvalidQuantityError, KubernetesError
from temper.kube import KubeClient, Reflector
from temper.quantity import cpu_millicores
from temper.service import run_service
from temper.tasks import TaskOwner
from temper.tiers import Tier

log = logging.getLogger(__name__)


@dataclass
class Decision:
    """Outcome of one reconcile: what the scheduler should run and what to publish."""

    scheduler_status: str
    desired_digest: str | None


class AgentService:
    """One agent for one Node."""

    def __init__(self, settings: AgentSettings, client: KubeClient) -> None:
        self.settings = settings
        self.client = client
        self.metrics = AgentMetrics()
        node = settings.node_name
        self.pods = Reflector(
            client, "/api/v1/pods", name="pods", params={"fieldSelector": f"spec.nodeName={node}"}
        )
        self.node = Reflector(
            client, "/api/v1/nodes", name="node", params={"fieldSelector": f"metadata.name={node}"}
        )
        self.namespace = Reflector(
            client,
            "/api/v1/namespaces",
            name="namespace",
            params={"fieldSelector": f"metadata.name={settings.safe_mode_namespace}"},
        )
        binary = shutil.which(settings.scx_layered_path) or settings.scx_layered_path
        self.supervisor = SchedulerSupervisor(
            binary=binary,
            config_path=settings.config_path,
            sysfs_root=settings.sysfs_root,
            state_dir=settings.state_dir,
            min_restart_interval_seconds=settings.min_restart_interval_seconds,
            attach_timeout_seconds=settings.scheduler_attach_timeout_seconds,
        )
        self.layout = CgroupLayout(
            settings.cgroup_root,
            detect_cgroup_version(settings.cgroup_root),
            settings.cgroup_driver,
        )
        self.stock_mode = StockKernelMode(
            self.layout,
            settings.state_dir / "cpu-idle.json",
            critical_cpu_shares=settings.stock_kernel_critical_cpu_shares,
            high_cpu_shares=settings.stock_kernel_high_cpu_shares,
        )
        self.profiles = ProfileResolver(settings.profile_dirs)
        self.observation = Observation(
            settings, self.layout, self.pods.store.values, self.metrics.registry
        )
        self.plan: LayerPlan | None = None
        self.config_bytes: bytes | None = None
        # Written configs by digest: the current one and the one the scheduler runs.
        self._configs: dict[str, list[dict[str, Any]]] = {}
        observer = self.observation.observer
        self.scx_monitor = ScxStatsMonitor(
            settings.scx_stats_socket_path,
            settings.scx_stats_interval_seconds,
            settings.scx_stats_timeout_seconds,
            attached=self.supervisor.attached,
            instance=self.supervisor.instance,
            running_config=self.running_config,
            layer_check=observer.layer_check if self.observation.enabled else None,
            targets=observer.pod_targets,
        )
        if settings.scx_stats_enabled:
            self.scx_monitor.register(self.metrics.registry)
        self.scheduler_status = annotations.SCHEDULER_STOCK
        self.ready = asyncio.Event()
        self._reported_invalid: set[str] = set()
        self._reported_limits: set[str] = set()
        self._published: dict[str, str] = {}
        self._published_at = 0.0

    # -- inputs -------------------------------------------------------------------------

    def _node_object(self) -> dict[str, Any]:
        return self.node.store.get(self.settings.node_name, {})

    def topology(self) -> Topology:
        """CPUs to size layers on: the setting, else the Node's capacity, else sysfs."""
        measured = read_topology(self.settings.sysfs_root)
        cpus = self.settings.node_cpus
        if cpus is None:
            capacity = (self._node_object().get("status") or {}).get("capacity") or {}
            try:
                cpus = math.floor(cpu_millicores(capacity["cpu"]) / 1000) or None
            except (KeyError, InvalidQuantityError):
                cpus = None
        if cpus is None or cpus == measured.cpus:
            return measured
        # The Node is not this machine (a demo or test node): no SMT or LLC facts apply.
        return Topology(cpus=cpus)

    def allocatable_millicores(self, topology: Topology) -> int:
        """Return the Node's allocatable CPU, or all CPUs when the Node reports none."""
        allocatable = (self._node_object().get("status") or {}).get("allocatable") or {}
        try:
            return cpu_millicores(allocatable["cpu"])
        except (KeyError, InvalidQuantityError):
            return topology.cpus * 1000

    def pod_infos(self) -> list[PodInfo]:
        """Parse every pod on the node; report each invalid one once and skip it."""
        infos = []
        for key, pod in self.pods.store.items():
            try:
                infos.append(pod_info(pod))
            except InvalidQuantityError as error:
                self.metrics.invalid_objects.labels("pod_quantity").inc()
                report = f"{key}:{error}"
                if report not in self._reported_invalid:
                    self._reported_invalid.add(report)
                    log.warning(
                        "ignoring pod with an invalid CPU quantity; fix the pod spec",
                        extra={"pod": key, "error": str(error)},
                    )
        return infos

    def safe_mode_requested(self) -> str | None:
        """Return the object (Node or Namespace) that requests safe mode, or None."""
        namespace = self.namespace.store.get(self.settings.safe_mode_namespace, {})
        sources = (
            (f"node/{self.settings.node_name}", self._node_object()),
            (f"namespace/{self.settings.safe_mode_namespace}", namespace),
        )
        for where, obj in sources:
            values = (obj.get("metadata") or {}).get("annotations") or {}
            self._check_safe_mode_value(where, values.get(annotations.SAFE_MODE_REQUESTED))
            if annotations.is_safe_mode_requested(values):
                return where
        return None

    def _check_safe_mode_value(self, where: str, value: str | None) -> None:
        """Report a value other than true or false once; it counts as not requested."""
        if value is None or value.strip().lower() in ("true", "false", ""):
            return
        report = f"{where}:{value}"
        if report not in self._reported_invalid:
            self._reported_invalid.add(report)
            self.metrics.invalid_objects.labels("safe_mode_annotation").inc()
            log.warning(
                'ignoring invalid safe-mode annotation; set it to "true" or remove it',
                extra={
                    "object": where,
                    "annotation": annotations.SAFE_MODE_REQUESTED,
                    "value": value,
                },
            )

    # -- reconcile ----------------------------------------------------------------------

    def _write_config(self, plan: LayerPlan, topology: Topology) -> None:
        try:
            validate_layer_config(plan.config, cpus=topology.cpus)
        except LayerConfigError as error:
            self.metrics.invalid_configs.inc()
            log.error(
                "generated layer config is invalid, keeping the previous one",
                extra={"node": self.settings.node_name, "problems": error.problems},
            )
            return
        content = orjson.dumps(plan.config, option=orjson.OPT_INDENT_2)
        self.plan = plan
        if content == self.config_bytes:
            return
        path = self.settings.config_path
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(content)
        os.replace(temporary, path)
        self.config_bytes = content
        running = self.supervisor.running_digest
        digest = config_digest(content)
        self._configs = {key: value for key, value in self._configs.items() if key == running} | {
            digest: plan.config
        }
        self.metrics.config_writes.inc()
        log.info(
            "layer config written",
            extra={"path": str(path), "layers": [layer["name"] for layer in plan.config]},
        )

    def running_config(self) -> list[dict[str, Any]] | None:
        """Return the config the running scheduler was started with, if this agent wrote it."""
        digest = self.supervisor.running_digest
        return None if digest is None else self._configs.get(digest)

    def decide(self, infos: list[PodInfo], support: SchedExtSupport) -> Decision:
        """Pick the scheduler state from safe mode, kernel support and the pods present."""
        requested_by = self.safe_mode_requested()
        if requested_by is not None:
            return Decision(annotations.SCHEDULER_SAFE_MODE, None)
        reason = support.reason
        if support.supported and self.layout.version is CgroupVersion.V1:
            reason = "cgroup v1: scx_layered matches cgroups of the v2 hierarchy only"
        elif support.supported:
            reason = ""
        wanted = any(info.temper_class and not info.terminal for info in infos)
        if reason:
            if self.settings.stock_kernel_mode and wanted:
                return Decision(annotations.SCHEDULER_STOCK_KERNEL_MODE, None)
            return Decision(annotations.SCHEDULER_UNSUPPORTED_PREFIX + reason, None)
        if not wanted:
            # Observe first: nothing is enforced until a pod requests a Temper class.
            return Decision(annotations.SCHEDULER_STOCK, None)
        if self.config_bytes is None:
            return Decision(annotations.SCHEDULER_STOCK, None)
        return Decision(annotations.SCHEDULER_SCX_LAYERED, config_digest(self.config_bytes))

    async def reconcile(self) -> None:
        """Recompute the config, move the scheduler, and publish the Node annotations."""
        self.metrics.reconciles.inc()
        topology = self.topology()
        infos = self.pod_infos()
        profile_layers = self.profiles.profile_layers(self.pods.store, infos, self.layout, topology)
        plan = compute_layer_plan(infos, self.layout, topology, profile_layers=profile_layers)
        self._write_config(plan, topology)
        decision = self.decide(infos, detect_sched_ext(self.settings.sysfs_root))
        await self.supervisor.ensure(decision.desired_digest)
        status = decision.scheduler_status
        if status == annotations.SCHEDULER_STOCK_KERNEL_MODE:
            self.stock_mode.apply(infos)
        else:
            self.stock_mode.restore_all()
        if decision.desired_digest is not None and not self.supervisor.attached():
            status = annotations.SCHEDULER_STOCK
        if status != self.scheduler_status:
            log.info(
                "scheduler state changed",
                extra={
                    "node": self.settings.node_name,
                    "from": self.scheduler_status,
                    "to": status,
                },
            )
        self.scheduler_status = status
        self._update_metrics(infos, status)
        load = compute_tier_load(infos, topology, self.allocatable_millicores(topology))
        await self.publish(
            {annotations.TIER_LOAD: load.encode(), annotations.SCHEDULER: status},
            changed_fields=(status, tuple(sorted((p.key, p.tier) for p in infos))),
        )
        self.ready.set()

    def _update_metrics(self, infos: list[PodInfo], status: str) -> None:
        self.metrics.layers.set(len(self.plan.config) if self.plan else 0)
        for tier in Tier:
            members = [i for i in infos if i.tier is tier and not i.terminal]
            self.metrics.tier_pods.labels(tier.value).set(len(members))
            self.metrics.tier_requested.labels(tier.value).set(
                sum(i.cpu_request_millicores for i in members)
            )
        enforcing = status == annotations.SCHEDULER_SCX_LAYERED
        self.metrics.enforcing.set(1 if enforcing else 0)
        bounded = self.plan.limited_pods if self.plan else []
        self.metrics.unenforced_limit_pods.set(len(bounded) if enforcing else 0)
        if enforcing:
            for key in bounded:
                if key not in self._reported_limits:
                    self._reported_limits.add(key)
                    log.warning(
                        "scx_layered does not enforce cpu.max; the pod's CPU limit is bounded "
                        "by its tier's -limited layer in whole CPUs",
                        extra={"pod": key, "node": self.settings.node_name},
                    )
        stats = self.supervisor.stats
        self.metrics.scheduler_restarts.set(stats.restarts)
        self.metrics.scheduler_failures.set(stats.failures)
        self.metrics.blackout_seconds.set(stats.blackout_seconds_total)

    async def publish(self, values: dict[str, str], changed_fields: object) -> None:
        """Merge-patch the Node annotations: at once on a change, else once per interval."""
        now = time.monotonic()
        due = now - self._published_at >= self.settings.publish_interval_seconds
        changed = values.get(annotations.SCHEDULER) != self._published.get(annotations.SCHEDULER)
        fingerprint = repr(changed_fields)
        changed = changed or fingerprint != self._published.get("fingerprint")
        if not (due or changed):
            return
        path = f"/api/v1/nodes/{self.settings.node_name}"
        try:
            await self.client.merge_patch(path, {"metadata": {"annotations": values}})
        except KubernetesError as error:
            self.metrics.publish_errors.inc()
            log.error(
                "cannot publish Node annotations, retrying on the next pass",
                extra={"node": self.settings.node_name, "error": str(error)},
            )
            return
        self._published = {**values, "fingerprint": fingerprint}
        self._published_at = now

    async def reconcile_loop(self, stop: asyncio.Event) -> None:
        """Reconcile after each debounced burst of changes, and at least once per interval."""
        await self._wait_synced(stop)
        seen = -1
        while not stop.is_set():
            revision = self._revision()
            if revision != seen:
                await asyncio.sleep(self.settings.debounce_seconds)
                seen = self._revision()
            await self.reconcile()
            await self._wait_for_change(seen, stop)

    def _revision(self) -> int:
        return self.pods.revision + self.node.revision + self.namespace.revision

    async def _wait_synced(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.pods.synced.is_set() and self.node.synced.is_set():
                return
            await asyncio.sleep(0.1)

    async def _wait_for_change(self, seen: int, stop: asyncio.Event) -> None:
        # Wake for new events, the publish interval, or a scheduler that needs retrying.
        deadline = time.monotonic() + min(self.settings.publish_interval_seconds, 5.0)
        while not stop.is_set() and time.monotonic() < deadline and self._revision() == seen:
            await asyncio.sleep(0.1)

    # -- HTTP ---------------------------------------------------------------------------

    def http_app(self) -> web.Application:
        """/metrics, /healthz, /readyz and /config (the current layer config)."""

        async def metrics(_: web.Request) -> web.Response:
            body = generate_latest(self.metrics.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def readyz(_: web.Request) -> web.Response:
            if self.ready.is_set():
                return web.Response(text="ok")
            return web.Response(status=503, text="waiting for the first reconcile")

        async def config(_: web.Request) -> web.Response:
            body = orjson.dumps(
                {
                    "node": self.settings.node_name,
                    "scheduler": self.scheduler_status,
                    "layers": self.plan.config if self.plan else None,
                }
            )
            return web.Response(body=body, content_type="application/json")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/config", config)
        self.observation.add_routes(app)
        return app


async def serve(settings: AgentSettings, stop: asyncio.Event) -> None:
    """Run the agent until ``stop`` is set, then shut down in order."""
    client = await KubeClient.connect(settings.kubeconfig)
    service = AgentService(settings, client)
    owner = TaskOwner("agent")
    runner = web.AppRunner(service.http_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.listen_address, settings.port)
    await site.start()
    log.info("agent serving", extra={"node": settings.node_name, "address": site.name})
    try:
        owner.spawn("pods", service.pods.run())
        owner.spawn("node", service.node.run())
        owner.spawn("namespace", service.namespace.run())
        loop = owner.spawn("reconcile", service.reconcile_loop(stop))
        owner.spawn("observe", service.observation.run(stop))
        if settings.scx_stats_enabled:
            owner.spawn("scx-stats", service.scx_monitor.run(stop))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([loop, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
    finally:
        await shutdown(service, owner, runner, client)


async def shutdown(
    service: AgentService, owner: TaskOwner, runner: web.AppRunner, client: KubeClient
) -> None:
    """Stop watches, then the scheduler (if configured), then announce it, then HTTP."""
    settings = service.settings
    log.info("agent shutting down", extra={"node": settings.node_name})
    await owner.close(timeout_seconds=5.0)
    service.stock_mode.restore_all()
    if settings.stop_scheduler_on_exit:
        await service.supervisor.stop("agent shutting down")
        status = service.scheduler_status
        if status in (annotations.SCHEDULER_SCX_LAYERED, annotations.SCHEDULER_STOCK_KERNEL_MODE):
            status = annotations.SCHEDULER_STOCK
        try:
            await asyncio.wait_for(
                client.merge_patch(
                    f"/api/v1/nodes/{settings.node_name}",
                    {"metadata": {"annotations": {annotations.SCHEDULER: status}}},
                ),
                timeout=3.0,
            )
        except (KubernetesError, TimeoutError) as error:
            log.warning(
                "cannot record the scheduler state on shutdown",
                extra={"node": settings.node_name, "error": str(error)},
            )
    await runner.cleanup()
    await client.close()


def run_agent(settings: AgentSettings) -> int:
    """Entry point of ``temper agent``."""
    return run_service("agent", settings, lambda stop: serve(settings, stop))
