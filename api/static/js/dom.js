// A tiny DOM builder: h("div.card#id", {onclick, title, class}, child, [children], "text").
// Text always goes in as text nodes (never HTML), so data can never inject markup.

/**
 * Build an element.
 * @param {string} spec tag with optional .classes and #id, e.g. "td.num"
 * @param {object|Node|string|Array|null} [attrs] attributes (on* are listeners) or a child
 * @param {...any} children nodes, strings, numbers, arrays, null/false (skipped)
 * @returns {HTMLElement}
 */
export function h(spec, attrs, ...children) {
  const m = /^([a-z0-9-]+)?((?:[.#][\w-]+)*)$/i.exec(spec);
  const tag = (m && m[1]) || "div";
  const svg = SVG_TAGS.has(tag);
  const el = svg ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  for (const part of (m ? m[2] : "").match(/[.#][\w-]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs != null && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") for (const c of String(v).split(/\s+/).filter(Boolean)) el.classList.add(c);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value" && !svg) el.value = v;
    else if (k === "checked" || k === "disabled" || k === "selected") el[k] = !!v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
const SVG_TAGS = new Set(["svg", "g", "path", "line", "circle", "rect", "text", "polyline",
  "title", "defs", "marker", "tspan"]);

/** Append children (flattening arrays, skipping null/false). */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replace an element's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A <details> with a summary line and lazily built content. */
export function expander(summary, build, { open = false, cls = "" } = {}) {
  const body = h("div.expander-body");
  const d = h("details" + (cls ? "." + cls : ""), h("summary", summary), body);
  let built = false;
  const fill = () => {
    if (!built && d.open) { built = true; append(body, [build()]); }
  };
  d.addEventListener("toggle", fill);
  if (open) { d.open = true; fill(); }
  return d;
}

/** Debounce a function by ms. */
export function debounce(fn, ms) {
  let t = 0;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}
