// DOM helpers. Every text from the API goes through textContent, never innerHTML, so names
// and messages cannot inject markup.

/**
 * Create an element. `attributes` maps names to values; `on` maps event names to handlers,
 * `dataset` to data-* values. Children are nodes or strings; null and false are skipped.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) {
      continue;
    }
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) {
        element.addEventListener(event, handler);
      }
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (name === "class") {
      element.className = value;
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    element.append(child instanceof Node ? child : String(child));
  }
}

/**
 * Replace the children of `container`. If the focused element was inside it and carried a
 * data-focus-key, focus the new element with the same key, so a live refresh does not
 * throw keyboard users back to the top of the page.
 */
export function replaceChildren(container, ...children) {
  const focused = document.activeElement;
  const key = container.contains(focused) ? focused?.dataset?.focusKey : undefined;
  container.replaceChildren();
  append(container, children);
  if (key) {
    const target = [...container.querySelectorAll("[data-focus-key]")].find(
      (element) => element.dataset.focusKey === key,
    );
    target?.focus();
  }
}

/**
 * Build a table with a caption. `columns` is a list of {label, cell(row)} where cell returns a
 * node or a string; `rowKey(row)` sets data-key on each row for tests and focus.
 */
export function table({ caption, columns, rows, rowKey, empty = "None." }) {
  if (rows.length === 0) {
    return h("p", { class: "empty" }, `${caption}: ${empty}`);
  }
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        columns.map((column) => h("th", { scope: "col" }, column.label)),
      ),
    ),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h(
          "tr",
          { dataset: rowKey ? { key: rowKey(row) } : {} },
          columns.map((column, index) =>
            h(index === 0 ? "th" : "td", index === 0 ? { scope: "row" } : {}, column.cell(row)),
          ),
        ),
      ),
    ),
  );
}

/** Build a description list from [term, value] pairs; values are nodes or strings. */
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
}

export function link(href, text, focusKey) {
  return h("a", { href, dataset: focusKey ? { focusKey } : {} }, text);
}

export function badge(text, kind) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

/** Format CPU millicores as Kubernetes does: "500m", or whole cores as "2". */
export function millicores(value) {
  if (value === null || value === undefined) {
    return "–";
  }
  return value % 1000 === 0 ? String(value / 1000) : `${value}m`;
}

export function number(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) {
    return "–";
  }
  return Number(value).toLocaleString("en", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

export function timestamp(seconds) {
  if (seconds === null || seconds === undefined) {
    return "–";
  }
  return new Date(seconds * 1000)
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, " UTC");
}

/** Encode one path segment of an API URL. */
export function segment(value) {
  return encodeURIComponent(value);
}
