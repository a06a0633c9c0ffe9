// The explorer below the node view. A pod's view shows its containers, tier and layer, the
// container logs with follow, and the performance and scheduling panels of its node agent.
// A workload's view shows its revision history with diffs and runs the rollout restart.

import { ApiError, getJson, readText, request } from "./api.js";
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
import {
  announce,
  coalesced,
  hasOperation,
  reportReloadError,
  runAction,
  showError,
} from "./shell.js";

// Workload kinds the revision and restart endpoints take, by the kind an owner reference or
// the workloads list names.
const WORKLOAD_RESOURCES = {
  Deployment: "deployments",
  StatefulSet: "statefulsets",
  DaemonSet: "daemonsets",
};
const WORKLOAD_KINDS = Object.fromEntries(
  Object.entries(WORKLOAD_RESOURCES).map(([kind, resource]) => [resource, kind]),
);
const LOG_LINES_KEPT = 5000;

function tierBadge(tier) {
  return badge(tier, `tier-${tier}`);
}

function workloadHref(namespace, kind, name) {
  return `#/workloads/${segment(namespace)}/${WORKLOAD_RESOURCES[kind]}/${segment(name)}`;
}

/**
 * Return the link of a row of the workloads list to its revision history, or its plain
 * name. Rows are grouped by the pods' direct controller, so a Deployment's pods show as a
 * ReplicaSet.
 */
export function workloadLink(workload) {
  const text = `${workload.kind}/${workload.name}`;
  if (!hasOperation("GET", "/namespaces/{namespace}/workloads/{kind}/{name}/revisions")) {
    return text;
  }
  if (WORKLOAD_RESOURCES[workload.kind]) {
    return link(workloadHref(workload.namespace, workload.kind, workload.name), text);
  }
  if (workload.kind === "ReplicaSet" && workload.name.includes("-")) {
    // NOTE: a Deployment names its ReplicaSets "<deployment>-<pod-template-hash>"; a
    // ReplicaSet made some other way leads to a workload view that reports 404.
    const deployment = workload.name.slice(0, workload.name.lastIndexOf("-"));
    return [
      text,
      " (",
      link(workloadHref(workload.namespace, "Deployment", deployment), `Deployment ${deployment}`),
      ")",
    ];
  }
  return text;
}

// -- pod detail -------------------------------------------------------------------------------

function ownerChain(detail) {
  if (!detail.owners?.length) {
    return "none (a bare pod)";
  }
  return detail.owners.map((owner, index) => {
    const text = `${owner.kind} ${owner.name}`;
    const label = owner.found === false ? `${text} (not found)` : text;
    const target =
      WORKLOAD_RESOURCES[owner.kind] && owner.found !== false
        ? link(workloadHref(detail.namespace, owner.kind, owner.name), label)
        : label;
    return [index ? " → " : "", target];
  });
}

function layerFacts(layer) {
  const reported = layer.reported
    ? `${layer.reported} (matched by ${layer.matchedBy})`
    : `unknown: ${layer.agentError ?? "the agent's config has no matching layer"}`;
  const rows = [
    ["Layer (agent rules)", layer.expected],
    ["Layer (agent config)", reported],
  ];
  if (layer.profileLayers?.length) {
    rows.push(["Profile layers", layer.profileLayers.join(", ")]);
  }
  return rows;
}

function priorityClassText(detail) {
  if (detail.priorityClass) {
    return `${detail.priorityClass.name} (value ${detail.priorityClass.value})`;
  }
  if (detail.priorityClassError) {
    return detail.priorityClassError;
  }
  return detail.priorityClassName ?? "none";
}

function containerState(container) {
  const state = container.state;
  const reason = state.reason ? `: ${state.reason}` : "";
  return `${state.state}${reason}`;
}

function containerTable(detail) {
  return table({
    caption: `Containers of ${detail.name}`,
    rows: detail.containers,
    rowKey: (container) => container.name,
    columns: [
      { label: "Container", cell: (c) => c.name },
      { label: "Kind", cell: (c) => c.kind },
      { label: "Image", cell: (c) => h("span", { class: "mono" }, c.image) },
      { label: "CPU request", cell: (c) => c.requests.cpu ?? "none" },
      { label: "CPU limit", cell: (c) => c.limits.cpu ?? "none" },
      { label: "Memory request", cell: (c) => c.requests.memory ?? "none" },
      { label: "Memory limit", cell: (c) => c.limits.memory ?? "none" },
      { label: "State", cell: containerState },
      { label: "Ready", cell: (c) => (c.ready ? "yes" : "no") },
      { label: "Restarts", cell: (c) => number(c.restartCount) },
    ],
  });
}

export async function podView(main, [namespace, podName], signal) {
  const base = `/namespaces/${segment(namespace)}/pods/${segment(podName)}`;
  const crumbs = h("div", {});
  const summary = h("div", { id: "pod-summary" });
  const containers = h("section", {
    id: "pod-containers",
    "aria-labelledby": "pod-containers-title",
  });
  main.append(crumbs, h("h1", {}, `Pod ${namespace}/${podName}`), summary, containers);
  if (!hasOperation("GET", "/namespaces/{namespace}/pods/{pod}")) {
    summary.append(h("p", {}, "This plane's API has no pod detail endpoint."));
    return null;
  }
  let detail = null;

  async function load() {
    detail = await getJson(base, { signal });
    replaceChildren(
      crumbs,
      breadcrumbTo(
        detail.node
          ? [
              ["Nodes", "#/nodes"],
              [detail.node, `#/nodes/${segment(detail.node)}`],
            ]
          : [["Nodes", "#/nodes"]],
        podName,
      ),
    );
    replaceChildren(
      summary,
      facts([
        [
          "Node",
          detail.node ? link(`#/nodes/${segment(detail.node)}`, detail.node) : "not scheduled",
        ],
        ["Phase", detail.terminating ? `${detail.phase} (terminating)` : detail.phase],
        ["Tier", tierBadge(detail.tier)],
        ["PriorityClass", priorityClassText(detail)],
        ["QoS class", detail.qosClass],
        [
          "CPU limit",
          detail.cpuLimitMillicores === null
            ? "none on some container"
            : millicores(detail.cpuLimitMillicores),
        ],
        ...layerFacts(detail.layer),
        ["Owners", ownerChain(detail)],
        ["Created", detail.createdAt ?? "–"],
        ["Pod IP", detail.podIP ?? "none"],
      ]),
    );
    replaceChildren(
      containers,
      h("h2", { id: "pod-containers-title" }, "Containers"),
      containerTable(detail),
    );
    return detail;
  }

  await load();
  if (hasOperation("GET", "/namespaces/{namespace}/pods/{pod}/containers/{container}/logs")) {
    main.append(logPanel(base, detail, signal));
  }
  if (hasOperation("GET", "/namespaces/{namespace}/pods/{pod}/performance")) {
    main.append(performancePanel(base, signal));
  }
  if (hasOperation("GET", "/namespaces/{namespace}/pods/{pod}/manifest")) {
    main.append(manifestDetails(`${base}/manifest`, "pod-manifest", signal));
  }
  const reload = coalesced(() => load().catch(reportReloadError));
  return {
    live: `kinds=pods&namespace=${encodeURIComponent(namespace)}`,
    onChange(event) {
      if (event.name === "connected") {
        reload();
      } else if (event.name === "pod" && event.data.object.name === podName) {
        if (event.data.type === "DELETED") {
          showError(new Error(`pod ${namespace}/${podName} was deleted`), "Live update");
        } else {
          reload();
        }
      }
    },
  };
}

function breadcrumbTo(items, last) {
  return h(
    "nav",
    { "aria-label": "Breadcrumb", class: "breadcrumb" },
    h(
      "ol",
      {},
      items.map(([text, href]) => h("li", {}, link(href, text))),
      h("li", {}, h("span", { "aria-current": "page" }, last)),
    ),
  );
}

/**
 * Build a collapsed section that loads the object's manifest from `path` when first opened
 * and shows it as indented JSON, as the API returns it.
 */
function manifestDetails(path, id, signal) {
  const output = h("pre", { class: "manifest", tabindex: "0", "aria-label": "Manifest" });
  const details = h("details", { id }, h("summary", {}, "Manifest"), output);
  let loaded = false;
  details.addEventListener("toggle", async () => {
    if (!details.open || loaded) {
      return;
    }
    loaded = true;
    output.textContent = "Loading.";
    try {
      output.textContent = JSON.stringify(await getJson(path, { signal }), null, 2);
    } catch (error) {
      loaded = false;
      const status = error instanceof ApiError ? `${error.status} ` : "";
      output.textContent = `Not available: ${status}${error.message}`;
    }
  });
  return details;
}

// -- logs -------------------------------------------------------------------------------------

function logPanel(base, detail, viewSignal) {
  const names = detail.containers.map((container) => container.name);
  const select = h(
    "select",
    { id: "log-container" },
    names.map((name) => h("option", { value: name }, name)),
  );
  const tail = h("input", {
    id: "log-tail",
    type: "number",
    min: 0,
    max: 1000000,
    value: 200,
    inputmode: "numeric",
  });
  const follow = h("input", { id: "log-follow", type: "checkbox" });
  const timestamps = h("input", { id: "log-timestamps", type: "checkbox" });
  const show = h("button", { type: "submit" }, "Show log");
  const stop = h("button", { type: "button", disabled: true }, "Stop following");
  const output = h("pre", {
    id: "log-output",
    class: "logs",
    tabindex: "0",
    "aria-label": "Container log",
    "aria-live": "off",
  });
  const state = h("p", { id: "log-state", class: "help" }, "No log loaded.");
  let controller = null;

  function append(text) {
    const lines = (output.textContent + text).split("\n");
    output.textContent = lines.slice(-LOG_LINES_KEPT).join("\n");
    output.scrollTop = output.scrollHeight;
  }

  async function showLog(event) {
    event.preventDefault();
    controller?.abort();
    controller = new AbortController();
    const signal = controller.signal;
    viewSignal.addEventListener("abort", () => controller?.abort(), { once: true });

    const container = select.value;
    const params = new URLSearchParams();
    if (tail.value.trim() !== "") {
      params.set("tailLines", tail.value.trim());
    }
    if (follow.checked) {
      params.set("follow", "true");
    }
    if (timestamps.checked) {
      params.set("timestamps", "true");
    }

    output.textContent = "";
    state.textContent = `Loading the log of ${container}.`;
    stop.disabled = !follow.checked;
    try {
      const response = await request(
        "GET",
        `${base}/containers/${segment(container)}/logs?${params}`,
        {
          signal,
          accept: "text/plain",
        },
      );
      state.textContent = follow.checked
        ? `Following the log of ${container}.`
        : `Log of ${container}.`;
      await readText(response, append, signal);
      state.textContent = signal.aborted
        ? `Stopped following ${container}.`
        : `End of the log of ${container}.`;
    } catch (error) {
      if (signal.aborted) {
        state.textContent = `Stopped following ${container}.`;
      } else {
        const status = error instanceof ApiError ? `${error.status} ` : "";
        state.textContent = `No log of ${container}: ${status}${error.message}`;
      }
    } finally {
      stop.disabled = true;
    }
  }

  stop.addEventListener("click", () => controller?.abort());
  const form = h(
    "form",
    { class: "filter", "aria-label": "Container log" },
    h("label", { for: "log-container" }, "Container"),
    select,
    h("label", { for: "log-tail" }, "Last lines"),
    tail,
    h("span", { class: "check" }, follow, h("label", { for: "log-follow" }, "Follow")),
    h("span", { class: "check" }, timestamps, h("label", { for: "log-timestamps" }, "Timestamps")),
    show,
    stop,
  );
  form.addEventListener("submit", showLog);
  return h(
    "section",
    { id: "pod-logs", "aria-labelledby": "pod-logs-title" },
    h("h2", { id: "pod-logs-title" }, "Logs"),
    form,
    state,
    output,
  );
}

// -- performance and scheduling -------------------------------------------------------------

function seconds(value, digits = 3) {
  return value === null || value === undefined ? "–" : `${number(value, digits)} s`;
}

function microseconds(value) {
  return value === null || value === undefined ? "–" : `${number(value)} µs`;
}

function performanceContent(panel) {
  const agent = panel.agent;
  const sampled =
    `${timestamp(agent.sampledAtSeconds)}, ${seconds(agent.ageSeconds, 1)} ago, ` +
    `every ${seconds(agent.intervalSeconds, 0)}`;
  const parts = [
    facts([
      ["Agent", agent.url],
      ["Sampled", sampled],
      ["Source", agent.source ?? "–"],
    ]),
  ];
  if (!panel.observed) {
    parts.push(h("p", {}, panel.reason));
    return parts;
  }
  const pod = panel.pod;
  parts.push(
    facts([
      ["Threads", number(pod.threads)],
      ["CPU time", seconds(pod.cpuSecondsTotal)],
      ["Run-queue delay", seconds(pod.runqDelaySecondsTotal)],
      ["Run-queue delay p99", microseconds(pod.runqDelayP99Microseconds)],
    ]),
  );
  const threads = pod.containers
    .flatMap((container) =>
      container.threads.map((thread) => ({ ...thread, container: container.name })),
    )
    .sort((a, b) => (b.cpuSecondsTotal ?? 0) - (a.cpuSecondsTotal ?? 0))
    .slice(0, 20);
  parts.push(
    table({
      caption: "Busiest threads (top 20 by CPU time, cumulative)",
      rows: threads,
      rowKey: (thread) => String(thread.tid),
      columns: [
        { label: "Thread", cell: (t) => `${t.comm} (${t.tid})` },
        { label: "Container", cell: (t) => t.container ?? "–" },
        { label: "CPU time", cell: (t) => seconds(t.cpuSecondsTotal) },
        { label: "Run-queue delay", cell: (t) => seconds(t.runqDelaySecondsTotal) },
        { label: "Involuntary switches", cell: (t) => number(t.nonvoluntaryContextSwitchesTotal) },
        { label: "Last CPU", cell: (t) => String(t.lastCpu ?? "–") },
      ],
    }),
  );
  if (panel.tierTotals) {
    parts.push(
      facts([
        [
          `Tier ${panel.tier} on the node`,
          `${number(panel.tierTotals.pods)} pod(s), run-queue delay p99 ` +
            microseconds(panel.tierTotals.runqDelayP99Microseconds),
        ],
      ]),
    );
  }
  return parts;
}

function schedulingContent(panel) {
  const load = panel.nodeTierLoad;
  if (!load) {
    return [h("p", {}, "The pod is not bound to a node.")];
  }
  if (load.error || load.tierLoadError) {
    return [
      h("p", { class: "error-text" }, load.error ?? `invalid tier load: ${load.tierLoadError}`),
    ];
  }
  if (!load.podTier) {
    return [h("p", {}, `Node ${load.node} reports no tier load for tier ${panel.tier}.`)];
  }
  const entry = load.podTier;
  return [
    facts([
      [
        `Tier ${panel.tier} on ${load.node}`,
        `${number(entry.pods)} pod(s), reported ${seconds(load.ageSeconds, 0)} ago`,
      ],
      ["Requested CPU", millicores(entry.requestedCpuMillicores)],
      ["Used CPU", millicores(entry.usedCpuMillicores)],
      ["Run-queue delay p99", microseconds(entry.runqDelayP99Microseconds)],
      ["Protection capacity", millicores(entry.protectionCapacityMillicores)],
    ]),
  ];
}

function performancePanel(base, signal) {
  const content = h("div", { id: "performance-content" }, h("p", {}, "Loading."));
  const scheduling = h("div", { id: "scheduling-content" });
  const refresh = h("button", { type: "button" }, "Refresh performance data");

  async function load() {
    refresh.disabled = true;
    const jobs = [
      getJson(`${base}/performance`, { signal })
        .then((panel) => replaceChildren(content, performanceContent(panel)))
        .catch((error) => replaceChildren(content, panelError(error))),
    ];
    if (hasOperation("GET", "/namespaces/{namespace}/pods/{pod}/scheduling")) {
      jobs.push(
        getJson(`${base}/scheduling`, { signal })
          .then((panel) =>
            replaceChildren(scheduling, h("h3", {}, "Node tier load"), schedulingContent(panel)),
          )
          .catch((error) => replaceChildren(scheduling, panelError(error))),
      );
    }
    await Promise.all(jobs);
    refresh.disabled = false;
  }

  refresh.addEventListener("click", load);
  load();
  return h(
    "section",
    { id: "pod-performance", "aria-labelledby": "pod-performance-title" },
    h("h2", { id: "pod-performance-title" }, "Performance"),
    h("p", { class: "help" }, "From the /observe endpoint of the node agent on the pod's node."),
    refresh,
    content,
    scheduling,
  );
}

// An agent that is missing or slow is normal in a cluster without agents, so the panel
// reports it in place instead of in the page's error region.
function panelError(error) {
  const status = error instanceof ApiError ? `${error.status} ` : "";
  return h("p", { class: "error-text" }, `Not available: ${status}${error.message}`);
}

// -- workload history and restart --------------------------------------------------------------

function diffView(diff) {
  if (diff.identical) {
    return h("p", {}, `Revisions ${diff.from} and ${diff.to} have the same pod template.`);
  }
  return h(
    "pre",
    {
      class: "diff",
      id: "revision-diff",
      tabindex: "0",
      "aria-label": `Diff from revision ${diff.from} to ${diff.to}`,
    },
    diff.diff.split("\n").map((line) => {
      let kind = "";
      if (line.startsWith("+") && !line.startsWith("+++")) {
        kind = "added";
      } else if (line.startsWith("-") && !line.startsWith("---")) {
        kind = "removed";
      }
      return h("span", { class: kind || null }, `${line}\n`);
    }),
  );
}

export async function workloadView(main, [namespace, resource, name], signal) {
  const kind = WORKLOAD_KINDS[resource] ?? resource;
  const base = `/namespaces/${segment(namespace)}/workloads/${segment(resource)}/${segment(name)}`;
  const history = h("section", { id: "revisions", "aria-labelledby": "revisions-title" });
  const diffSection = h("section", { id: "diff", "aria-labelledby": "diff-title" });
  const actions = h("div", { class: "button-row" });
  main.append(
    breadcrumbTo([["Workloads", "#/workloads"]], `${kind} ${name}`),
    h("h1", {}, `${kind} ${namespace}/${name}`),
    actions,
    history,
    diffSection,
  );
  if (hasOperation("GET", "/namespaces/{namespace}/workloads/{kind}/{name}")) {
    main.append(manifestDetails(base, "workload-manifest", signal));
  }

  if (hasOperation("POST", "/namespaces/{namespace}/workloads/{kind}/{name}/restart")) {
    const restart = h("button", { type: "button", class: "danger" }, "Rollout restart");
    restart.addEventListener("click", () =>
      runAction(restart, {
        label: `Rollout restart of ${kind} ${namespace}/${name}`,
        method: "POST",
        path: `${base}/restart`,
        confirm: {
          title: `Restart ${kind} ${namespace}/${name}?`,
          text: "Its controller replaces every pod, as kubectl rollout restart does.",
          ok: "Rollout restart",
        },
        done: (result) =>
          `Rollout restart of ${kind} ${namespace}/${name} requested at ${result.restartedAt}.`,
      }),
    );
    actions.append(restart);
  }

  const { items } = await getJson(`${base}/revisions`, { signal });
  const revisions = items.map((item) => item.revision);
  replaceChildren(
    history,
    h("h2", { id: "revisions-title" }, "Revision history"),
    table({
      caption: `${items.length} revision(s), oldest first`,
      rows: items,
      rowKey: (item) => String(item.revision),
      empty: "no revisions.",
      columns: [
        { label: "Revision", cell: (r) => String(r.revision) },
        { label: "Object", cell: (r) => r.name },
        { label: "Created", cell: (r) => r.createdAt ?? "–" },
        { label: "Change cause", cell: (r) => r.changeCause ?? "–" },
        { label: "Replicas", cell: (r) => (r.replicas === null ? "–" : number(r.replicas)) },
        { label: "Current", cell: (r) => (r.current ? badge("current", "ok") : "") },
      ],
    }),
  );
  if (revisions.length < 2) {
    replaceChildren(
      diffSection,
      h("h2", { id: "diff-title" }, "Changes"),
      h("p", {}, "A diff needs two revisions."),
    );
    return null;
  }

  const current = items.find((item) => item.current)?.revision ?? revisions[revisions.length - 1];
  const previous = [...revisions].reverse().find((revision) => revision < current) ?? revisions[0];
  const revisionSelect = (id, selected) =>
    h(
      "select",
      { id },
      revisions.map((revision) =>
        h("option", { value: revision, selected: revision === selected }, `Revision ${revision}`),
      ),
    );
  const from = revisionSelect("diff-from", previous);
  const to = revisionSelect("diff-to", current);
  const output = h("div", { id: "diff-output" });
  const form = h(
    "form",
    { class: "filter", "aria-label": "Compare revisions" },
    h("label", { for: "diff-from" }, "From"),
    from,
    h("label", { for: "diff-to" }, "To"),
    to,
    h("button", { type: "submit" }, "Compare"),
  );

  async function compare() {
    const diff = await getJson(`${base}/revisions/diff?from=${from.value}&to=${to.value}`, {
      signal,
    });
    replaceChildren(output, diffView(diff));
    announce(`Showing the changes from revision ${diff.from} to ${diff.to}.`);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    compare().catch((error) => showError(error, "Comparing revisions failed"));
  });
  replaceChildren(
    diffSection,
    h("h2", { id: "diff-title" }, "Changes of the pod template"),
    form,
    output,
  );
  await compare();
  return null;
}
