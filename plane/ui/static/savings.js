// The savings view: CPU and nodes the webhook already reclaimed (realized) beside what the
// rightsizer's open recommendations would reclaim (opportunity), priced when the plane has a
// price table. It reads GET /api/v1/savings, and on a hub GET /api/v1/hub/savings too.

import { ApiError, getJson } from "./api.js";
import { badge, facts, h, millicores, number, replaceChildren, table } from "./dom.js";
import { hasOperation, hubEnabled, setHubEnabled, showError } from "./shell.js";

function money(amount, pricing) {
  if (amount === null || amount === undefined) {
    return pricing.configured ? "–" : "not priced";
  }
  return `${number(amount, 2)} ${pricing.currency ?? ""}`.trim();
}

function perMonth(amount, pricing) {
  return pricing.configured ? `, ${money(amount, pricing)} a month` : "";
}

function cpuWithPrice(measure, pricing) {
  const unpriced =
    pricing.configured && measure.unpricedCpuMillicores
      ? ` (${millicores(measure.unpricedCpuMillicores)} CPU without a price)`
      : "";
  return `${millicores(measure.cpuMillicores)} CPU${perMonth(measure.perMonth, pricing)}${unpriced}`;
}

function pricingNote(pricing) {
  if (pricing.error) {
    return h("p", { class: "error-text" }, `The price table could not be used: ${pricing.error}`);
  }
  if (!pricing.configured) {
    return h(
      "p",
      {},
      "No price table is configured, so savings are given in CPU and nodes only. " +
        "Start the plane with --price-table-path to price them.",
    );
  }
  return h(
    "p",
    {},
    `Prices in ${pricing.currency} from ${pricing.path}; a month is ${pricing.hoursPerMonth} hours.`,
  );
}

function summary(body) {
  const { pricing, realized, opportunity } = body;
  return h(
    "div",
    { class: "cards" },
    h(
      "section",
      { class: "card", id: "savings-realized", "aria-labelledby": "realized-title" },
      h("h2", { id: "realized-title" }, "Realized reclaim"),
      h("p", { class: "help" }, "CPU requests the overcommit webhook already lowered."),
      facts([
        ["CPU", cpuWithPrice(realized.cpu, pricing)],
        ["Pods", number(realized.cpu.pods)],
        [
          body.namespace ? "Nodes freed (whole cluster)" : "Nodes freed",
          `${number(realized.nodes.nodesFreed)}${perMonth(realized.nodes.perMonth, pricing)}`,
        ],
      ]),
      h("p", { class: "help" }, "CPU and nodes describe the same reclaim and are not added."),
    ),
    h(
      "section",
      { class: "card", id: "savings-opportunity", "aria-labelledby": "opportunity-title" },
      h("h2", { id: "opportunity-title" }, "Identified opportunity"),
      h("p", { class: "help" }, "What the rightsizer's open recommendations would give back."),
      facts([
        ["CPU", cpuWithPrice(opportunity.cpu, pricing)],
        ["Pods", number(opportunity.cpu.pods)],
        [
          "Recommendations",
          `${number(opportunity.recommendations)} ` +
            `(${number(opportunity.dismissedRecommendations)} dismissed)`,
        ],
        [
          "Under-provisioned",
          `${millicores(opportunity.cpu.underProvisionedCpuMillicores)} CPU ` +
            "below the recommendations",
        ],
      ]),
    ),
  );
}

function recommendationText(recommendation) {
  if (!recommendation) {
    return "none";
  }
  if (recommendation.error) {
    return `invalid: ${recommendation.error}`;
  }
  return recommendation.applied ? `${recommendation.status}, applied` : recommendation.status;
}

function workloadTable(body) {
  const rows = body.namespaces.flatMap((namespace) => namespace.workloads);
  return table({
    caption: body.namespace ? `Workloads in ${body.namespace}` : "Workloads in every namespace",
    rows,
    rowKey: (w) => `${w.namespace}/${w.kind}/${w.name}`,
    empty: "no workloads with reclaimed CPU or a recommendation.",
    columns: [
      { label: "Workload", cell: (w) => `${w.kind}/${w.name}` },
      { label: "Namespace", cell: (w) => w.namespace },
      { label: "Realized CPU", cell: (w) => millicores(w.realized.cpuMillicores) },
      { label: "Realized a month", cell: (w) => money(w.realized.perMonth, body.pricing) },
      { label: "Opportunity CPU", cell: (w) => millicores(w.opportunity.cpuMillicores) },
      { label: "Opportunity a month", cell: (w) => money(w.opportunity.perMonth, body.pricing) },
      { label: "Recommendation", cell: (w) => recommendationText(w.recommendation) },
    ],
  });
}

function machineTypeTable(body) {
  return table({
    caption: "Nodes freed per machine type (first-fit decreasing packing of the pods' requests)",
    rows: body.realized.nodes.machineTypes,
    rowKey: (row) => row.machineType ?? "unlabelled",
    empty: "no Nodes.",
    columns: [
      { label: "Machine type", cell: (r) => r.machineType ?? "unlabelled" },
      { label: "Nodes", cell: (r) => number(r.nodes) },
      { label: "Needed with original requests", cell: (r) => number(r.nodesNeededOriginal) },
      { label: "Needed with current requests", cell: (r) => number(r.nodesNeededCurrent) },
      { label: "Freed", cell: (r) => number(r.nodesFreed) },
      { label: "A month", cell: (r) => money(r.perMonth, body.pricing) },
      { label: "Price source", cell: (r) => r.priceSource },
    ],
  });
}

function problemList(body) {
  if (!body.problemCount) {
    return null;
  }
  const more = body.problemCount - body.problems.length;
  return h(
    "section",
    { "aria-labelledby": "savings-problems-title" },
    h("h2", { id: "savings-problems-title" }, `Skipped objects (${body.problemCount})`),
    h(
      "ul",
      {},
      body.problems.map((problem) => h("li", {}, `${problem.object}: ${problem.error}`)),
      more > 0 ? h("li", {}, `and ${more} more`) : null,
    ),
  );
}

function clusterTable(items) {
  // Each cluster prices with its own table and currency, so amounts are not added up.
  const priced = (amount, currency) =>
    amount === null || amount === undefined || !currency
      ? "not priced"
      : `${number(amount, 2)} ${currency}`;
  const totals = (read) => (row) => (row.savings ? read(row.savings) : "–");
  return table({
    caption: "Savings per cluster, each in its own currency",
    rows: items,
    rowKey: (row) => row.name,
    columns: [
      { label: "Cluster", cell: (r) => (r.local ? `${r.name} (this plane)` : r.name) },
      {
        label: "Status",
        cell: (r) =>
          r.reachable ? badge("reachable", "ok") : [badge("unreachable", "error"), " ", r.error],
      },
      { label: "Realized CPU", cell: totals((s) => millicores(s.realizedCpu.cpuMillicores)) },
      {
        label: "Realized a month",
        cell: totals((s) => priced(s.realizedCpu.perMonth, s.currency)),
      },
      { label: "Nodes freed", cell: totals((s) => number(s.realizedNodes.nodesFreed)) },
      {
        label: "Opportunity CPU",
        cell: totals((s) => millicores(s.opportunityCpu.cpuMillicores)),
      },
      {
        label: "Opportunity a month",
        cell: totals((s) => priced(s.opportunityCpu.perMonth, s.currency)),
      },
    ],
  });
}

/** Load the hub's savings per cluster into `section`; leave it empty without a hub. */
async function loadClusters(section, signal) {
  if (!hasOperation("GET", "/hub/savings") || hubEnabled() === false) {
    return;
  }
  try {
    const { items } = await getJson("/hub/savings", { signal });
    setHubEnabled(true);
    replaceChildren(section, h("h2", {}, "Clusters"), clusterTable(items));
  } catch (error) {
    // 404: the hub routes exist but the hub is not enabled on this plane.
    if (!(error instanceof ApiError && error.status === 404)) {
      throw error;
    }
    setHubEnabled(false);
  }
}

export async function savingsView(main, _params, signal) {
  const input = h("input", { id: "savings-namespace", type: "text", spellcheck: "false" });
  const form = h(
    "form",
    { class: "filter", role: "search", "aria-label": "Filter savings" },
    h("label", { for: "savings-namespace" }, "Namespace"),
    input,
    h("button", { type: "submit" }, "Filter"),
  );
  const report = h("div", { id: "savings-report" });
  const clusters = h("section", { id: "savings-clusters" });
  main.append(h("h1", {}, "Savings"), form, report, clusters);

  async function load() {
    const namespace = input.value.trim();
    const query = namespace ? `?namespace=${encodeURIComponent(namespace)}` : "";
    const body = await getJson(`/savings${query}`, { signal });
    replaceChildren(
      report,
      pricingNote(body.pricing),
      summary(body),
      h("h2", {}, "Per workload"),
      workloadTable(body),
      h("h2", {}, "Nodes"),
      machineTypeTable(body),
      problemList(body),
    );
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load().catch((error) => showError(error, "Loading savings failed"));
  });
  await Promise.all([load(), loadClusters(clusters, signal)]);
}
