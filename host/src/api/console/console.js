// The console's frame: the route in the URL's hash (#/overview, #/failures,
// #/items?state=…, #/item/12, #/plugins), the API-key prompt, and polling.

import { ApiError, forgetKey, storeKey, storedKey } from "./api.js";
import * as pages from "./pages.js";
import { h } from "./ui.js";

/** How often a live page asks the server again. */
const POLL_MS = 2000;

const view = document.getElementById("view");
const notice = document.getElementById("notice");
const keyPrompt = document.getElementById("key-prompt");
const forget = document.getElementById("forget-key");

let current = { token: 0, shown: null };
let timer = null;

/** The page and its parameters from location.hash. */
function route() {
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  const params = new URLSearchParams(search || "");
  const [name, id] = path.split("/");
  if (name === "item" && id) {
    params.set("id", id);
    return { name: "item", page: pages.item, params };
  }
  const page = pages[name] && name !== "item" ? pages[name] : pages.overview;
  return { name: pages[name] ? name : "overview", page, params };
}

const ctx = {
  notify(message, isError = false) {
    notice.textContent = message;
    notice.classList.toggle("error", isError);
  },
  refresh: () => show(false),
};

/** Loads and draws the current page; `fresh` when the route changed. */
async function show(fresh) {
  clearTimeout(timer);
  const { name, page, params } = route();
  const token = ++current.token;
  if (fresh) {
    current.shown = null;
    document.title = `${page.title} · Keeper console`;
    for (const a of document.querySelectorAll("[data-nav]")) {
      if (a.dataset.nav === (name === "item" ? "items" : name)) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }
  try {
    const data = await page.load(params);
    if (token !== current.token) return;
    keyPrompt.hidden = true;
    const shown = page.shown ? page.shown(data) : JSON.stringify(data);
    if (shown !== current.shown) {
      current.shown = shown;
      // Keep the keyboard focus on the same control across a redraw.
      const focused = document.activeElement?.dataset?.key;
      view.replaceChildren(page.render(data, params, ctx));
      view.dataset.page = name;
      view.dataset.route = location.hash;
      view.dataset.loadedAt = String(Date.now());
      if (focused) view.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
      if (fresh) view.focus({ preventScroll: true });
    }
    view.dataset.polledAt = String(Date.now());
  } catch (e) {
    if (token !== current.token) return;
    if (e instanceof ApiError && e.status === 401) {
      askForKey(storedKey() ? "The key was refused: " + e.message : null);
      return;
    }
    view.replaceChildren(h("p", { class: "error", role: "alert" }, e.message));
    view.dataset.page = name;
  }
  if (page.poll) timer = setTimeout(() => show(false), POLL_MS);
}

function askForKey(error) {
  keyPrompt.hidden = false;
  forget.hidden = !storedKey();
  document.getElementById("key-error").textContent = error || "";
  view.replaceChildren();
  document.getElementById("key-input").focus();
}

document.getElementById("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = document.getElementById("key-input");
  storeKey(input.value);
  input.value = "";
  forget.hidden = false;
  show(true);
});

forget.addEventListener("click", () => {
  forgetKey();
  forget.hidden = true;
  show(true);
});

forget.hidden = !storedKey();
window.addEventListener("hashchange", () => {
  ctx.notify("");
  show(true);
});
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) show(false);
});
show(true);
