// The views of the UI and the hash routes that select them. A view renders into `main` and
// may return {onChange(event)}, which live updates call when the cluster changes.

import { ApiError, getJson, getJsonLines, request } from "./api.js";
import {
  badge,
  facts,
  h,
  link,
  millicores,
  number,
  replaceChildren,
  segment,
  table,
  timestamp,
} from "./dom.js";
import { podView, workloadLink, workloadView } from "./explorer.js";
import { savingsView } from "./savings.js";
import {
  announce,
  coalesced,
  hasOperation,
  hubEnabled,
  reportReloadError,
  runAction,
  setHubEnabled,
  showError,
} from "./shell.js";

export const TIERS = ["critical", "high", "normal", "low", "background"];

const ROUTES = [
  ["clusters", /^#\/clusters$/, clustersView],
  ["nodes", /^#\/nodes$/, nodesView],
  ["nodes", /^#\/nodes\/([^/]+)$/, nodeView],
  ["nodes", /^#\/pods\/([^/]+)\/([^/]+)$/, podView],
  ["workloads", /^#\/workloads$/, workloadsView],
  ["workloads", /^#\/workloads\/([^/]+)\/([^/]+)\/([^/]+)$/, workloadView],
  ["savings", /^#\/savings$/, savingsView],
  ["audit", /^#\/audit$/, auditView],
];

/** Return the view for a location hash; unknown hashes show the clusters. */
export function routeFor(hash) {
  for (const [name, pattern, view] of ROUTES) {
    const match = pattern.exec(hash);
    if (match) {
      return { name, view, params: match.slice(1).map(decodeURIComponent) };
    }
  }
  return { name: "clusters", view: clustersView, params: [] };
}

export function breadcrumb(...items) {
  return h(
    "nav",
    { "aria-label": "Breadcrumb", class: "breadcrumb" },
    h(
      "ol",
      {},
      items.map(([text, href], index) =>
        h(
          "li",
          {},
          index === items.length - 1
            ? h("span", { "aria-current": "page" }, text)
            : link(href, text),
        ),
      ),
    ),
  );
}

export function tierBadge(tier) {
  return badge(tier, `tier-${tier}`);
}

/**
 * Call `load` again every `intervalMilliseconds` until `done(value)` is true or `attempts` run
 * out. The read endpoints serve a watch cache that lags an action by the watch delay.
 */
export async function reloadUntil(load, done, { attempts = 20, intervalMilliseconds = 250 } = {}) {
  try {
    let value = await load();
    for (let attempt = 1; attempt < attempts && !done(value); attempt++) {
      await new Promise((resolve) => setTimeout(resolve, intervalMilliseconds));
      value = await load();
    }
  } catch (error) {
    reportReloadError(error);
  }
}

// -- clusters -------------------------------------------------------------------------------

async function clustersView(main, _params, signal) {
  const list = h("div", { id: "cluster-list" });
  const fleet = h("section", { "aria-labelledby": "fleet-title" });
  main.append(h("h1", {}, "Clusters"), list, fleet);

  // Columns of a cluster summary (CLUSTER_SCHEMA); `summaryOf(row)` returns it or null.
  function summaryColumns(summaryOf) {
    const count = (read) => (row) => {
      const summary = summaryOf(row);
      return summary ? read(summary) : "–";
    };
    return [
      { label: "Nodes", cell: count((c) => number(c.nodes)) },
      { label: "Cordoned nodes", cell: count((c) => number(c.unschedulableNodes)) },
      { label: "Pods", cell: count((c) => number(c.pods)) },
      ...TIERS.map((tier) => ({
        label: `Tier ${tier}`,
        cell: count((c) => number(c.podsPerTier?.[tier] ?? 0)),
      })),
      { label: "Safe mode", cell: count(safeModeSummary) },
    ];
  }

  function renderPlain(items) {
    replaceChildren(
      list,
      table({
        caption: "Clusters this plane serves",
        rows: items,
        rowKey: (cluster) => cluster.name,
        columns: [
          { label: "Cluster", cell: (c) => link("#/nodes", c.name, `cluster-${c.name}`) },
          ...summaryColumns((c) => c),
        ],
      }),
    );
  }

  function renderHub(items) {
    replaceChildren(
      list,
      h(
        "p",
        { class: "help" },
        "This plane is a hub: it lists its peers' clusters. Explore a peer's nodes and pods " +
          "in the peer's own UI.",
      ),
      table({
        caption: "Clusters of this hub",
        rows: items,
        rowKey: (cluster) => cluster.name,
        columns: [
          {
            label: "Cluster",
            cell: (c) =>
              c.local
                ? [link("#/nodes", c.name, `cluster-${c.name}`), " ", badge("this plane", "ok")]
                : c.name,
          },
          {
            label: "Status",
            cell: (c) =>
              c.reachable
                ? badge("reachable", "ok")
                : [badge("unreachable", "error"), " ", c.error ?? ""],
          },
          {
            label: "Address",
            cell: (c) =>
              c.local || !c.url
                ? "–"
                : h("a", { href: `${c.url}/ui/`, rel: "noopener noreferrer" }, c.url),
          },
          {
            label: "Latency",
            cell: (c) =>
              c.latencyMilliseconds === null ? "–" : `${number(c.latencyMilliseconds)} ms`,
          },
          ...summaryColumns((c) => c.summary),
        ],
      }),
    );
  }

  /** Load the cluster list; return this plane's own cluster summary. */
  async function load() {
    if (hasOperation("GET", "/hub/clusters") && hubEnabled() !== false) {
      try {
        const { items } = await getJson("/hub/clusters", { signal });
        setHubEnabled(true);
        renderHub(items);
        const local = items.find((cluster) => cluster.local)?.summary ?? null;
        renderFleet(local);
        return local;
      } catch (error) {
        // 404: the hub routes exist but the hub is not enabled on this plane.
        if (!(error instanceof ApiError && error.status === 404)) {
          throw error;
        }
        setHubEnabled(false);
      }
    }
    const { items } = await getJson("/clusters", { signal });
    renderPlain(items);
    renderFleet(items[0]);
    return items[0];
  }

  function renderFleet(cluster) {
    const requested = Boolean(cluster?.fleetSafeModeRequested);
    const scope = cluster?.name ? `of cluster ${cluster.name} ` : "";
    const button = h(
      "button",
      {
        type: "button",
        class: requested ? "" : "danger",
        dataset: { focusKey: "fleet-safe-mode" },
        on: { click: () => toggleFleet(button, requested) },
      },
      requested ? "Resume enforcement on every node" : "Request safe mode on every node",
    );
    replaceChildren(
      fleet,
      h("h2", { id: "fleet-title" }, "Fleet safe mode"),
      h(
        "p",
        {},
        requested
          ? `Fleet safe mode is requested: every agent ${scope}stops enforcing and the nodes ` +
              "run the kernel's stock scheduler."
          : `Requesting fleet safe mode makes every agent ${scope}stop enforcing; the nodes ` +
              "return to the kernel's stock scheduler.",
      ),
      h("p", {}, button),
    );
  }

  async function toggleFleet(button, requested) {
    const result = await runAction(button, {
      label: requested ? "Resume fleet enforcement" : "Request fleet safe mode",
      method: requested ? "DELETE" : "PUT",
      path: "/safe-mode",
      confirm: requested
        ? null
        : {
            title: "Request safe mode on every node?",
            text: "Every node agent stops enforcing CPU tiers until safe mode is removed.",
            ok: "Request fleet safe mode",
          },
      done: () => (requested ? "Fleet safe mode removed." : "Fleet safe mode requested."),
    });
    if (result) {
      await reloadUntil(load, (local) => Boolean(local?.fleetSafeModeRequested) !== requested);
    }
  }

  await load();
  // Any Node or Pod change may change the counts: reload a second after a change, once for
  // all changes in that second.
  return { live: "", onChange: coalesced(() => load().catch(reportReloadError), 1000) };
}

function safeModeSummary(cluster) {
  if (cluster.fleetSafeModeRequested) {
    return badge("fleet safe mode", "warning");
  }
  const nodes = cluster.nodesInSafeMode ?? [];
  return nodes.length === 0 ? "none" : `${nodes.length} node(s): ${nodes.join(", ")}`;
}

// -- nodes ------------------------------------------------------------------------------------

export function nodeStateBadges(node) {
  return [
    node.unschedulable ? badge("cordoned", "warning") : badge("schedulable", "ok"),
    node.safeModeRequested ? [" ", badge("safe mode requested", "warning")] : null,
  ];
}

function tierLoadSummary(node) {
  if (node.tierLoadError) {
    return badge("invalid tier load", "error");
  }
  if (!node.tierLoad) {
    return "not reported";
  }
  const tiers = node.tierLoad.tiers ?? {};
  const requested = Object.values(tiers).reduce(
    (sum, entry) => sum + (entry.requestedCpuMillicores ?? 0),
    0,
  );
  return `${millicores(requested)} of ${millicores(node.tierLoad.nodeCpuMillicores)} CPU requested`;
}

async function nodesView(main, _params, signal) {
  const list = h("div", { id: "node-list" });
  main.append(h("h1", {}, "Nodes"), list);
  let nodes = new Map();

  function render() {
    const items = [...nodes.values()].sort((a, b) => a.name.localeCompare(b.name));
    replaceChildren(
      list,
      table({
        caption: `${items.length} node(s)`,
        rows: items,
        rowKey: (node) => node.name,
        empty: "no Nodes in the cluster.",
        columns: [
          { label: "Node", cell: (n) => link(`#/nodes/${segment(n.name)}`, n.name, n.name) },
          { label: "CPU allocatable", cell: (n) => n.allocatable?.cpu ?? "–" },
          { label: "Scheduler", cell: (n) => n.scheduler ?? "not reported" },
          { label: "State", cell: nodeStateBadges },
          { label: "Tier load", cell: tierLoadSummary },
        ],
      }),
    );
  }

  async function load() {
    const { items } = await getJson("/nodes", { signal });
    nodes = new Map(items.map((node) => [node.name, node]));
    render();
  }

  const reload = coalesced(() => load().catch(reportReloadError));
  await load();
  return {
    live: "kinds=nodes",
    onChange(event) {
      if (event.name === "connected") {
        reload();
      } else if (event.name === "node") {
        applyChange(
          nodes,
          event.data,
          (node) => node.name,
          () => true,
        );
        render();
      }
    },
  };
}

/**
 * Apply one change event ({type, object}) to `items`, a Map keyed by `keyOf(object)`; an
 * object for which `belongs(object)` is false is removed, as a pod that left the node.
 */
export function applyChange(items, change, keyOf, belongs) {
  const key = keyOf(change.object);
  if (change.type === "DELETED" || !belongs(change.object)) {
    items.delete(key);
  } else {
    items.set(key, change.object);
  }
}

function tierLoadTable(node) {
  if (node.tierLoadError) {
    return h(
      "p",
      { class: "error-text" },
      `The tier-load annotation is invalid: ${node.tierLoadError}`,
    );
  }
  if (!node.tierLoad) {
    return h("p", {}, "The node agent has not reported a tier load.");
  }
  const rows = TIERS.filter((tier) => node.tierLoad.tiers?.[tier]).map((tier) => ({
    tier,
    ...node.tierLoad.tiers[tier],
  }));
  return table({
    caption: `Tier load reported at ${timestamp(node.tierLoad.timestampSeconds)}`,
    rows,
    rowKey: (row) => row.tier,
    columns: [
      { label: "Tier", cell: (r) => tierBadge(r.tier) },
      { label: "Requested CPU", cell: (r) => millicores(r.requestedCpuMillicores) },
      { label: "Used CPU", cell: (r) => millicores(r.usedCpuMillicores) },
      { label: "Run-queue delay p99", cell: (r) => `${number(r.runqDelayP99Microseconds)} µs` },
      { label: "Protection capacity", cell: (r) => millicores(r.protectionCapacityMillicores) },
      { label: "Pods", cell: (r) => number(r.pods) },
    ],
  });
}

export function podTable(pods, caption) {
  const withDetail = hasOperation("GET", "/namespaces/{namespace}/pods/{pod}");
  return table({
    caption,
    rows: pods,
    rowKey: (pod) => `${pod.namespace}/${pod.name}`,
    empty: "no pods.",
    columns: [
      {
        label: "Pod",
        cell: (p) =>
          withDetail
            ? link(
                `#/pods/${segment(p.namespace)}/${segment(p.name)}`,
                p.name,
                `pod-${p.namespace}-${p.name}`,
              )
            : p.name,
      },
      { label: "Namespace", cell: (p) => p.namespace },
      { label: "Phase", cell: (p) => (p.terminating ? `${p.phase} (terminating)` : p.phase) },
      { label: "Tier", cell: (p) => tierBadge(p.tier) },
      { label: "Layer", cell: (p) => p.layer },
      {
        label: "CPU limit",
        cell: (p) => (p.cpuLimitMillicores === null ? "none" : millicores(p.cpuLimitMillicores)),
      },
      { label: "Owner", cell: (p) => (p.owner ? `${p.owner.kind}/${p.owner.name}` : "–") },
    ],
  });
}

/** Build an <input type="number"> with its label and help text, for optional seconds. */
function secondsField(id, label, help, { min = 0, max, step = 1 } = {}) {
  const input = h("input", {
    id,
    type: "number",
    min,
    max,
    step,
    inputmode: "decimal",
    "aria-describedby": `${id}-help`,
    dataset: { focusKey: id },
  });
  const field = h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    h("p", { id: `${id}-help`, class: "help" }, help),
  );
  return { input, field };
}

/** Parse an optional number field; return undefined when empty, raise when invalid. */
function optionalNumber(input, name, { min, max, integer = false }) {
  const text = input.value.trim();
  if (text === "") {
    return undefined;
  }
  const value = Number(text);
  if (
    !Number.isFinite(value) ||
    value < min ||
    value > max ||
    (integer && !Number.isInteger(value))
  ) {
    const kind = integer ? "whole seconds" : "seconds";
    throw new Error(`${name} ${text} is invalid; enter ${kind} from ${min} to ${max}`);
  }
  return value;
}

function filenameOf(response, fallback) {
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  return match ? match[1] : fallback;
}

async function nodeView(main, [nodeName], signal) {
  const base = `/nodes/${segment(nodeName)}`;
  const summary = h("div", { id: "node-summary" });
  const actions = h("section", { id: "node-actions", "aria-labelledby": "node-actions-title" });
  const actionButtons = h("div", { class: "button-row" });
  const drainResult = h("div", { id: "drain-result" });
  const load = h("section", { "aria-labelledby": "tier-load-title" });
  const podsSection = h("section", { id: "node-pods", "aria-labelledby": "node-pods-title" });
  main.append(
    breadcrumb(["Nodes", "#/nodes"], [nodeName, null]),
    h("h1", {}, `Node ${nodeName}`),
    summary,
    actions,
    load,
    podsSection,
  );
  let node = null;
  let pods = new Map();

  function renderNode() {
    replaceChildren(
      summary,
      facts([
        ["State", nodeStateBadges(node)],
        ["Scheduler", node.scheduler ?? "not reported"],
        ["CPU allocatable", node.allocatable?.cpu ?? "–"],
        ["Memory allocatable", node.allocatable?.memory ?? "–"],
      ]),
    );
    renderActionButtons();
    replaceChildren(load, h("h2", { id: "tier-load-title" }, "Tier load"), tierLoadTable(node));
  }

  function renderPods() {
    const items = [...pods.values()].sort(
      (a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name),
    );
    replaceChildren(
      podsSection,
      h("h2", { id: "node-pods-title" }, "Pods"),
      podTable(items, `${items.length} pod(s) on ${nodeName}, with tier and layer`),
    );
  }

  async function loadNode() {
    node = await getJson(base, { signal });
    renderNode();
    return node;
  }

  async function loadPods() {
    const { items } = await getJson(`${base}/pods`, { signal });
    pods = new Map(items.map((pod) => [`${pod.namespace}/${pod.name}`, pod]));
    renderPods();
  }

  function actionButton(label, key, onClick, danger = false) {
    const button = h(
      "button",
      { type: "button", class: danger ? "danger" : "", dataset: { focusKey: key } },
      label,
    );
    button.addEventListener("click", () => onClick(button));
    return button;
  }

  function renderActionButtons() {
    replaceChildren(
      actionButtons,
      node.unschedulable
        ? actionButton("Uncordon", "uncordon", (b) => setCordon(b, false))
        : actionButton("Cordon", "cordon", (b) => setCordon(b, true)),
      node.safeModeRequested
        ? actionButton("Resume enforcement", "safe-mode", (b) => setSafeMode(b, false))
        : actionButton("Request safe mode", "safe-mode", (b) => setSafeMode(b, true), true),
    );
  }

  // The drain and trace forms are built once, so they keep their typed values across live
  // refreshes. Only the cordon and safe-mode buttons follow the node's state.
  function buildActions() {
    const grace = secondsField(
      "drain-grace",
      "Eviction grace period in seconds (optional)",
      "Empty: the plane's setting, else each pod's own.",
      { max: 86400 },
    );
    const timeout = secondsField(
      "drain-timeout",
      "Drain timeout in seconds (optional)",
      "How long blocked evictions are retried and evicted pods awaited. " +
        "Empty: the plane's setting; 0: one pass.",
      { max: 3600, step: "any" },
    );
    const children = [
      h("h2", { id: "node-actions-title" }, "Actions"),
      actionButtons,
      h(
        "fieldset",
        { class: "drain" },
        h("legend", {}, "Drain"),
        grace.field,
        timeout.field,
        actionButton("Drain", "drain", (b) => drain(b, grace.input, timeout.input), true),
      ),
      drainResult,
    ];
    if (hasOperation("GET", "/nodes/{node}/trace")) {
      const seconds = secondsField(
        "trace-seconds",
        "Capture length in seconds (optional)",
        "Empty: 5 seconds. The node agent records scheduler events for this long.",
        { max: 600, step: "any" },
      );
      children.push(
        h(
          "fieldset",
          { class: "trace" },
          h("legend", {}, "Scheduler trace"),
          seconds.field,
          actionButton("Download scheduler trace", "trace", (b) => downloadTrace(b, seconds.input)),
        ),
      );
    }
    replaceChildren(actions, ...children);
  }

  async function setCordon(button, cordon) {
    const verb = cordon ? "Cordon" : "Uncordon";
    const result = await runAction(button, {
      label: `${verb} node ${nodeName}`,
      method: "POST",
      path: `${base}/${cordon ? "cordon" : "uncordon"}`,
      done: () => `Node ${nodeName} ${cordon ? "cordoned" : "uncordoned"}.`,
    });
    if (result) {
      await reloadUntil(loadNode, (n) => n.unschedulable === cordon);
    }
  }

  async function setSafeMode(button, requested) {
    const result = await runAction(button, {
      label: requested ? `Request safe mode on ${nodeName}` : `Resume enforcement on ${nodeName}`,
      method: requested ? "PUT" : "DELETE",
      path: `${base}/safe-mode`,
      confirm: requested
        ? {
            title: `Request safe mode on ${nodeName}?`,
            text: "The node agent stops enforcing CPU tiers on this node until safe mode is removed.",
            ok: "Request safe mode",
          }
        : null,
      done: () =>
        requested ? `Safe mode requested on ${nodeName}.` : `Safe mode removed on ${nodeName}.`,
    });
    if (result) {
      await reloadUntil(loadNode, (n) => n.safeModeRequested === requested);
    }
  }

  async function drain(button, graceInput, timeoutInput) {
    const body = {};
    try {
      const grace = optionalNumber(graceInput, "Grace period", {
        min: 0,
        max: 86400,
        integer: true,
      });
      const timeoutSeconds = optionalNumber(timeoutInput, "Timeout", { min: 0, max: 3600 });
      if (grace !== undefined) {
        body.gracePeriodSeconds = grace;
      }
      if (timeoutSeconds !== undefined) {
        body.timeoutSeconds = timeoutSeconds;
      }
    } catch (error) {
      showError(error, "Drain");
      return;
    }
    const result = await runAction(button, {
      label: `Drain node ${nodeName}`,
      method: "POST",
      path: `${base}/drain`,
      body,
      busy: `Draining node ${nodeName}; blocked evictions are retried until the timeout.`,
      confirm: {
        title: `Drain ${nodeName}?`,
        text:
          "The node is cordoned and its pods are evicted. Evictions a PodDisruptionBudget " +
          "blocks are retried until the timeout; pods still blocked then are listed.",
        ok: "Drain",
      },
      done: (r) =>
        `Drain of ${nodeName} ${r.complete ? "complete" : "incomplete"}: ` +
        `${r.evicted.length} evicted, ${r.blocked.length} blocked, ` +
        `${r.failed.length} failed, ${r.skipped.length} skipped.`,
    });
    if (result) {
      renderDrainResult(result);
      await reloadUntil(loadNode, (n) => n.unschedulable);
      await loadPods();
    }
  }

  function renderDrainResult(result) {
    const group = (title, items) =>
      table({
        caption: `${title} (${items.length})`,
        rows: items,
        rowKey: (pod) => `${pod.namespace}/${pod.name}`,
        empty: "none.",
        columns: [
          { label: "Pod", cell: (p) => `${p.namespace}/${p.name}` },
          {
            label: "Reason",
            cell: (p) => p.reason ?? (p.deleted === false ? "not deleted yet" : ""),
          },
        ],
      });
    replaceChildren(
      drainResult,
      h("h3", {}, `Last drain: ${result.complete ? "complete" : "incomplete"}`),
      h("p", {}, `${result.attempts} eviction pass(es) within ${result.timeoutSeconds} s.`),
      group("Evicted", result.evicted),
      group("Blocked by a PodDisruptionBudget", result.blocked),
      group("Failed", result.failed),
      group("Skipped (mirror and DaemonSet pods)", result.skipped),
    );
  }

  async function downloadTrace(button, secondsInput) {
    let seconds;
    try {
      seconds = optionalNumber(secondsInput, "Capture length", { min: 0.1, max: 600 });
    } catch (error) {
      showError(error, "Scheduler trace");
      return;
    }
    const query = seconds === undefined ? "" : `?seconds=${seconds}`;
    button.disabled = true;
    announce(`Capturing a scheduler trace on ${nodeName}.`);
    try {
      const response = await request("GET", `${base}/trace${query}`, { accept: "text/plain" });
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const anchor = h("a", {
        href: url,
        download: filenameOf(response, `temper-${nodeName}.trace.txt`),
      });
      document.body.append(anchor);
      anchor.click();
      anchor.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      announce(`Scheduler trace of ${nodeName} downloaded (${number(blob.size)} bytes).`);
    } catch (error) {
      showError(error, `Scheduler trace of ${nodeName} failed`);
    } finally {
      button.disabled = false;
    }
  }

  await Promise.all([loadNode(), loadPods()]);
  buildActions();
  const reload = coalesced(() => Promise.all([loadNode(), loadPods()]).catch(reportReloadError));
  return {
    live: `node=${encodeURIComponent(nodeName)}`,
    onChange(event) {
      if (event.name === "connected") {
        reload();
      } else if (event.name === "node" && event.data.object.name === nodeName) {
        if (event.data.type === "DELETED") {
          showError(new Error(`node ${nodeName} was deleted`), "Live update");
          return;
        }
        node = event.data.object;
        renderNode();
      } else if (event.name === "pod") {
        applyChange(
          pods,
          event.data,
          (pod) => `${pod.namespace}/${pod.name}`,
          (pod) => pod.node === nodeName,
        );
        renderPods();
      }
    },
  };
}

// -- workloads ------------------------------------------------------------------------------

async function workloadsView(main, _params, signal) {
  const list = h("div", { id: "workload-list" });
  const input = h("input", { id: "namespace-filter", type: "text", spellcheck: "false" });
  const form = h(
    "form",
    { class: "filter", role: "search", "aria-label": "Filter workloads" },
    h("label", { for: "namespace-filter" }, "Namespace"),
    input,
    h("button", { type: "submit" }, "Filter"),
  );
  main.append(h("h1", {}, "Workloads"), form, list);

  async function load() {
    const namespace = input.value.trim();
    const query = namespace ? `?namespace=${encodeURIComponent(namespace)}` : "";
    const { items } = await getJson(`/workloads${query}`, { signal });
    replaceChildren(
      list,
      table({
        caption: namespace ? `Workloads in ${namespace}` : "Workloads in every namespace",
        rows: items,
        rowKey: (w) => `${w.namespace}/${w.kind}/${w.name}`,
        empty: "no pods.",
        columns: [
          { label: "Workload", cell: workloadLink },
          { label: "Namespace", cell: (w) => w.namespace },
          { label: "Pods", cell: (w) => number(w.pods) },
          {
            label: "Pods per tier",
            cell: (w) =>
              TIERS.filter((tier) => w.tiers[tier]).map((tier) => [
                tierBadge(tier),
                ` ${w.tiers[tier]} `,
              ]),
          },
          {
            label: "Nodes",
            cell: (w) =>
              w.nodes.map((node, index) => [
                index ? ", " : "",
                link(`#/nodes/${segment(node)}`, node),
              ]),
          },
        ],
      }),
    );
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load().catch((error) => showError(error, "Filtering workloads failed"));
  });
  await load();
  return { live: "kinds=pods", onChange: coalesced(() => load().catch(reportReloadError), 1000) };
}

// -- audit log ------------------------------------------------------------------------------

// NOTE: the first load reads the whole audit log, because the export has no limit
// parameter; a large log makes this view slow to open.
const AUDIT_ROWS_SHOWN = 500;

async function auditView(main, _params, signal) {
  const list = h("div", { id: "audit-list" });
  const outcome = h(
    "select",
    { id: "audit-outcome" },
    ["all", "allowed", "denied", "failed"].map((value) => h("option", { value }, value)),
  );
  const newer = h("button", { type: "button" }, "Load newer entries");
  main.append(
    h("h1", {}, "Audit log"),
    h(
      "p",
      {},
      "Every request to the API, allowed or denied, newest first. " +
        "Reading it needs an admin token.",
    ),
    h("div", { class: "filter" }, h("label", { for: "audit-outcome" }, "Outcome"), outcome, newer),
    list,
  );
  let entries = [];

  function render() {
    const visibleEntries = entries
      .filter((entry) => outcome.value === "all" || entry.outcome === outcome.value)
      .slice(-AUDIT_ROWS_SHOWN)
      .reverse();
    replaceChildren(
      list,
      table({
        caption: `Newest ${visibleEntries.length} of ${entries.length} entries`,
        rows: visibleEntries,
        rowKey: (entry) => String(entry.seq),
        empty: "no entries.",
        columns: [
          { label: "Sequence", cell: (e) => String(e.seq) },
          { label: "Time", cell: (e) => timestamp(e.time) },
          { label: "Token", cell: (e) => e.token ?? "none" },
          { label: "Role", cell: (e) => e.role ?? "–" },
          { label: "Request", cell: (e) => `${e.method} ${e.path}` },
          { label: "Operation", cell: (e) => e.operation ?? "–" },
          {
            label: "Outcome",
            cell: (e) =>
              badge(`${e.outcome} ${e.status}`, e.outcome === "allowed" ? "ok" : "error"),
          },
          { label: "Detail", cell: (e) => e.detail },
        ],
      }),
    );
  }

  async function loadNewer() {
    const after = entries.length ? entries[entries.length - 1].seq : 0;
    const added = await getJsonLines(`/audit?format=jsonl&afterSeq=${after}`, { signal });
    entries = entries.concat(added);
    render();
    return added.length;
  }

  outcome.addEventListener("change", render);
  newer.addEventListener("click", async () => {
    try {
      const count = await loadNewer();
      announce(`${count} newer audit entries.`);
    } catch (error) {
      showError(error, "Loading the audit log failed");
    }
  });
  try {
    await loadNewer();
  } catch (error) {
    replaceChildren(
      list,
      h("p", { class: "error-text" }, `The audit log is not available: ${error.message}`),
    );
    throw error;
  }
}
