// The clipsearch search page. Plain JS, no build step: it talks to the API
// described in openapi.json (POST /search, GET /products/{id}/similar,
// GET /facets, GET /health) and nothing else, so the same files work against
// the local server and against the AWS deployment.
"use strict";

(() => {
  const CONFIG = window.CLIPSEARCH_CONFIG || {};
  const API = String(CONFIG.apiBase || "").replace(/\/+$/, "");
  const PAGE_SIZE = Math.min(100, Math.max(1, Number(CONFIG.pageSize) || 24));
  const MAX_OFFSET = 1000;           // config.OFFSET_MAX on the server
  const MAX_UPLOAD_BYTES = 3 * 1024 * 1024;  // config.MAX_IMAGE_BYTES
  const SHRINK_ABOVE_BYTES = 1024 * 1024;    // CLIP sees 224 px; big photos are shrunk first
  const SHRINK_TO_PX = 768;
  const CHECKBOX_LIMIT = 12;         // more values than this get a dropdown

  const $ = (id) => document.getElementById(id);
  const el = {
    form: $("search-form"), q: $("q"), dropZone: $("drop-zone"), overlay: $("drop-overlay"),
    imageInput: $("image-input"), imageButton: $("image-button"), imageChip: $("image-chip"),
    imagePreview: $("image-preview"), imageName: $("image-name"), imageRemove: $("image-remove"),
    mix: $("mix"), mixRange: $("mix-range"), searchButton: $("search-button"),
    mode: $("mode"),
    filtersDetails: $("filters-details"), filtersForm: $("filters-form"),
    filterFields: $("filter-fields"), filtersEmpty: $("filters-empty"),
    filterCount: $("filter-count"), clearFilters: $("clear-filters"),
    results: $("results"), similarBar: $("similar-bar"), similarTitle: $("similar-title"),
    similarClear: $("similar-clear"), error: $("error"), errorTitle: $("error-title"),
    errorMessage: $("error-message"), status: $("status"), welcome: $("welcome"),
    examples: $("examples"), catalogInfo: $("catalog-info"), grid: $("grid"),
    pager: $("pager"), prev: $("prev"), next: $("next"), pageLabel: $("page-label"),
    footerInfo: $("footer-info"),
  };

  const state = {
    text: "",
    image: null,      // {base64, name, previewUrl}
    similar: null,    // {id, title}: "more like this" mode
    filters: {},
    offset: 0,
    controller: null, // AbortController of the request in flight
    searched: false,
    shown: null,      // the request behind the results on screen, for "why this result"
    explained: null,  // Promise of id -> explain object for those results
  };

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(status, body, retryAfter) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.code = body && body.error;
      this.field = body && body.field;
      this.retryAfter = retryAfter;
    }
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(API + path, {
        ...options,
        headers: { Accept: "application/json", ...(options.headers || {}) },
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, {
        error: "network",
        message: `Cannot reach the search server${API ? ` at ${API}` : ""}. Is it running?`,
      });
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      throw new ApiError(response.status, body, response.headers.get("Retry-After"));
    }
    if (!body) throw new ApiError(response.status, { message: "The server sent an unreadable answer." });
    return body;
  }

  function imageSrc(url) {
    if (!url) return null;
    return url.startsWith("/") ? API + url : url;
  }

  // ------------------------------------------------------------------ search

  function buildRequest() {
    const filters = Object.keys(state.filters).length ? state.filters : undefined;
    if (state.similar) {
      const params = new URLSearchParams({ k: PAGE_SIZE, offset: state.offset });
      if (filters) params.set("filters", JSON.stringify(filters));
      return {
        path: `/products/${encodeURIComponent(state.similar.id)}/similar?${params}`,
        options: {},
        describe: `similar to “${state.similar.title}”`,
      };
    }
    const body = { k: PAGE_SIZE, offset: state.offset };
    if (state.text) body.text = state.text;
    if (state.image) body.image = state.image.base64;
    if (state.text && state.image) {
      const imageShare = Number(el.mixRange.value) / 100;
      body.weights = { text: 1 - imageShare, image: imageShare };
    }
    if (filters) body.filters = filters;
    if (el.mode.value) body.mode = el.mode.value;  // unset: the API's default for the query
    const kind = state.text && state.image ? `for “${state.text}” + image`
      : state.text ? `for “${state.text}”` : "for your image";
    return {
      path: "/search",
      options: {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      },
      describe: kind,
    };
  }

  function hasQuery() {
    return Boolean(state.similar || state.text || state.image);
  }

  async function runSearch({ focusResults = false } = {}) {
    if (!hasQuery()) {
      showError("Nothing to search for", "Type a few words or add a photo first.");
      el.q.focus();
      return;
    }
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    const request = buildRequest();
    setLoading(true);
    hideError();
    try {
      const data = await api(request.path, { ...request.options, signal: controller.signal });
      if (controller !== state.controller) return;
      state.searched = true;
      state.shown = request;
      state.explained = null;
      render(data, request.describe);
      if (focusResults) el.results.focus({ preventScroll: false });
    } catch (err) {
      if (err.name === "AbortError") return;
      showApiError(err);
    } finally {
      if (controller === state.controller) {
        state.controller = null;
        setLoading(false);
      }
    }
  }

  function setLoading(loading) {
    document.body.classList.toggle("is-loading", loading);
    el.grid.setAttribute("aria-busy", String(loading));
    el.searchButton.disabled = loading;
    el.searchButton.textContent = loading ? "Searching…" : "Search";
    if (loading) {
      el.status.innerHTML = '<span class="spinner" aria-hidden="true"></span> Searching…';
      if (!el.grid.children.length) renderSkeleton();
    }
  }

  function renderSkeleton() {
    el.welcome.hidden = true;
    el.grid.replaceChildren(...Array.from({ length: 8 }, () => {
      const li = document.createElement("li");
      li.className = "card skeleton";
      li.setAttribute("aria-hidden", "true");
      li.innerHTML = '<div class="thumb"></div><div class="card-body"><div class="line"></div><div class="line short"></div></div>';
      return li;
    }));
  }

  // ------------------------------------------------------------------ rendering

  function render(data, describe) {
    el.welcome.hidden = true;
    const results = data.results || [];
    el.grid.replaceChildren(...results.map((result) => renderCard(result, data.mode)));
    const first = data.offset + 1;
    const last = data.offset + results.length;
    if (results.length) {
      el.status.textContent = `Results ${first}–${last} ${describe} · ${Math.round(data.took_ms)} ms`;
    } else if (data.offset > 0) {
      el.status.textContent = `No more results ${describe}.`;
    } else {
      el.status.textContent = `No results ${describe}${Object.keys(state.filters).length ? " with these filters — try removing some" : ""}.`;
    }
    const page = Math.floor(data.offset / PAGE_SIZE) + 1;
    el.pageLabel.textContent = `Page ${page}`;
    el.prev.disabled = data.offset === 0;
    el.next.disabled = results.length < data.k || data.offset + data.k > MAX_OFFSET;
    el.pager.hidden = el.prev.disabled && el.next.disabled;
    el.similarBar.hidden = !state.similar;
    if (state.similar) el.similarTitle.textContent = state.similar.title;
  }

  function renderCard(result, mode) {
    const li = document.createElement("li");
    li.className = "card";
    li.dataset.id = result.id;

    const thumb = document.createElement("div");
    thumb.className = "thumb";
    const src = imageSrc(result.image);
    if (src) {
      const img = document.createElement("img");
      img.src = src;
      img.alt = result.title;
      img.loading = "lazy";
      img.decoding = "async";
      img.width = 224;
      img.height = 224;
      img.addEventListener("error", () => thumb.classList.add("no-image"), { once: true });
      thumb.append(img);
    } else {
      thumb.classList.add("no-image");
    }
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = `#${result.rank}`;
    thumb.append(rank);

    const body = document.createElement("div");
    body.className = "card-body";
    const title = document.createElement("h2");
    title.className = "card-title";
    title.id = `title-${result.rank}`;
    title.textContent = result.title;

    const score = document.createElement("p");
    score.className = "score";
    const cosine = mode === "vector";
    const pct = Math.max(0, Math.min(1, cosine ? (result.score + 1) / 2 : result.score));
    score.innerHTML = '<span class="score-bar" aria-hidden="true"><span></span></span><span class="score-value"></span>';
    score.querySelector(".score-bar span").style.width = `${(pct * 100).toFixed(1)}%`;
    score.querySelector(".score-value").textContent = `score ${result.score.toFixed(3)}`;
    score.title = SCORE_MEANING[mode] || SCORE_MEANING.vector;

    const attrs = document.createElement("ul");
    attrs.className = "attrs";
    for (const [key, value] of Object.entries(result.attributes || {}).slice(0, 4)) {
      const item = document.createElement("li");
      item.textContent = `${key}: ${value}`;
      attrs.append(item);
    }

    const more = document.createElement("button");
    more.type = "button";
    more.className = "btn btn-small btn-outline more-like";
    more.textContent = "More like this";
    more.setAttribute("aria-describedby", title.id);
    more.addEventListener("click", () => {
      state.similar = { id: result.id, title: result.title };
      state.offset = 0;
      runSearch({ focusResults: true });
    });

    body.append(title, score, attrs, renderWhy(result), more);
    li.append(thumb, body);
    return li;
  }

  // ------------------------------------------------------------------ why this result

  const SCORE_MEANING = {
    vector: "Cosine similarity of the product's best image or title to the query (−1 to 1)",
    lexical: "Word match (BM25) relative to the best match (0 to 1)",
    hybrid: "Words and meaning fused into one score (0 to 1)",
  };
  const SIGNAL_NAMES = {
    exact_id: "Exact id", vector: "Meaning", lexical: "Words", image: "Best image", title: "Title",
  };

  // A collapsed "Why this result?" per card. The explanations are asked for only when
  // one is opened: the same request again with explain=true, once per results page.
  function renderWhy(result) {
    const why = document.createElement("details");
    why.className = "why";
    const summary = document.createElement("summary");
    summary.textContent = "Why this result?";
    const content = document.createElement("div");
    content.className = "why-content";
    why.append(summary, content);
    why.addEventListener("toggle", async () => {
      if (!why.open || why.dataset.loaded) return;
      content.textContent = "Loading…";
      try {
        const explained = await explanations();
        const explain = explained.get(result.id);
        content.replaceChildren(explain ? describeExplain(explain)
          : document.createTextNode("This product is no longer in these results."));
        why.dataset.loaded = "true";
      } catch (err) {
        content.textContent = `Could not load the explanation: ${err.message}`;
      }
    });
    return why;
  }

  function explanations() {
    if (!state.explained) {
      const request = state.shown;
      let path = request.path;
      const options = { ...request.options };
      if (options.body) {
        options.body = JSON.stringify({ ...JSON.parse(options.body), explain: true });
      } else {
        path += `${path.includes("?") ? "&" : "?"}explain=true`;
      }
      state.explained = api(path, options).then((data) =>
        new Map((data.results || []).map((r) => [r.id, r.explain])));
      state.explained.catch(() => { state.explained = null; });  // a retry may work
    }
    return state.explained;
  }

  function describeExplain(explain) {
    const list = document.createElement("dl");
    const add = (name, text) => {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = text;
      list.append(dt, dd);
    };
    const num = (value) => (value === null || value === undefined ? "–" : value.toFixed(3));
    for (const [name, signal] of Object.entries(explain.signals || {})) {
      const label = SIGNAL_NAMES[name] || name;
      if (name === "exact_id") {
        add(label, "the query is this product's id");
      } else if (name === "image") {
        add(label, signal.vectors ? `cosine ${num(signal.score)} (best of ${signal.vectors})`
          : "no image indexed");
      } else if (name === "title") {
        add(label, signal.score === null ? "no title vector" : `cosine ${num(signal.score)}`);
      } else if (signal.rank === null) {
        add(label, "not among this signal's best matches");
      } else {
        let text = `rank ${signal.rank}, score ${num(signal.score)}`;
        if (signal.matched === "title") text += ", via the title";
        if (signal.matched === "image") {
          text += signal.image_index ? `, via image ${signal.image_index + 1}` : ", via the main image";
        }
        add(label, text);
      }
    }
    add(explain.mode === "hybrid" ? `Fused (${explain.fusion})` : "Score", num(explain.score));
    return list;
  }

  // ------------------------------------------------------------------ errors

  function hideError() {
    el.error.hidden = true;
  }

  function showError(title, message) {
    el.errorTitle.textContent = title;
    el.errorMessage.textContent = message;
    el.error.hidden = false;
  }

  function showApiError(err) {
    // Old results under a new error would read as answers to the failed query.
    el.status.textContent = "";
    el.grid.replaceChildren();
    el.pager.hidden = true;
    el.similarBar.hidden = true;
    el.welcome.hidden = state.searched;
    if (err.status === 503) {
      const wait = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : " Try again shortly.";
      showError("The search service is busy or warming up.", err.message + wait);
    } else if (err.status === 413) {
      showError("That is too large.", err.message);
    } else if (err.status === 404) {
      showError("Not found.", err.message);
    } else if (err.status >= 400 && err.status < 500) {
      const titles = { image: "That image did not work.", text: "Check your search text.",
        q: "Check your search text.", body: "The request was not accepted." };
      const field = String(err.field || "");
      const title = titles[field] || (field.startsWith("filters") ? "Check the filters." : "The search was not accepted.");
      showError(title, err.message);
    } else if (err.status === 0) {
      showError("Offline.", err.message);
    } else {
      showError("The server had a problem.", "Please try again. If it keeps happening, check the server log.");
    }
  }

  // ------------------------------------------------------------------ images

  function readAsBase64(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  async function shrink(file) {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(1, SHRINK_TO_PX / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return new Promise((resolve, reject) => canvas.toBlob(
      (blob) => (blob ? resolve(blob) : reject(new Error("cannot encode"))), "image/jpeg", 0.9));
  }

  async function setImage(file) {
    if (!file) return;
    hideError();
    if (file.type && !file.type.startsWith("image/")) {
      showError("That file is not an image.", `“${file.name}” is ${file.type}; use a JPEG, PNG, WebP or GIF.`);
      return;
    }
    let blob = file;
    if (file.size > SHRINK_ABOVE_BYTES) {
      try {
        blob = await shrink(file);
      } catch (_) {
        blob = file; // let the server judge it; it explains what is wrong
      }
    }
    if (blob.size > MAX_UPLOAD_BYTES) {
      showError("That image is too large.", `It is ${(blob.size / 1048576).toFixed(1)} MB; the limit is 3 MB.`);
      return;
    }
    clearImage();
    const previewUrl = URL.createObjectURL(file);
    state.image = { base64: await readAsBase64(blob), name: file.name || "pasted image", previewUrl };
    el.imagePreview.src = previewUrl;
    el.imageName.textContent = state.image.name;
    el.imageChip.hidden = false;
    el.imagePreview.hidden = false;
    el.imagePreview.onerror = () => { el.imagePreview.hidden = true; };
    updateMix();
    state.text = el.q.value.trim();
    state.similar = null;
    state.offset = 0;
    runSearch();
  }

  function clearImage() {
    if (state.image) URL.revokeObjectURL(state.image.previewUrl);
    state.image = null;
    el.imageChip.hidden = true;
    el.imageInput.value = "";
    updateMix();
  }

  function updateMix() {
    el.mix.hidden = !(state.image && el.q.value.trim());
  }

  // ------------------------------------------------------------------ filters

  async function loadFacets() {
    try {
      const data = await api("/facets");
      buildFilters(data.fields || {});
      if (!(CONFIG.examples || []).length) showExamples(examplesFromFacets(data.fields || {}));
    } catch (err) {
      el.filtersEmpty.textContent = "Filters are unavailable right now.";
    }
  }

  function buildFilters(fields) {
    el.filterFields.replaceChildren();
    const names = Object.keys(fields);
    el.filtersEmpty.hidden = names.length > 0;
    if (!names.length) el.filtersEmpty.textContent = "This catalog has no filterable attributes.";
    for (const name of names) {
      const facet = fields[name];
      const fieldset = document.createElement("fieldset");
      fieldset.className = "facet";
      fieldset.dataset.field = name;
      fieldset.dataset.type = facet.type;
      const legend = document.createElement("legend");
      legend.textContent = name.replace(/_/g, " ");
      fieldset.append(legend);
      if (facet.type === "number") {
        fieldset.append(numberInput(name, "min", facet.min), numberInput(name, "max", facet.max));
        fieldset.classList.add("facet-range");
      } else if (facet.type === "boolean") {
        fieldset.append(selectInput(name, [["", "Any"], ["true", "Yes"], ["false", "No"]]));
      } else if ((facet.values || []).length <= CHECKBOX_LIMIT) {
        for (const { value, count } of facet.values || []) {
          const id = `f-${name}-${String(value).replace(/[^A-Za-z0-9_-]/g, "_")}`;
          const label = document.createElement("label");
          label.className = "check";
          label.htmlFor = id;
          const box = document.createElement("input");
          box.type = "checkbox";
          box.id = id;
          box.value = value;
          box.name = name;
          const text = document.createElement("span");
          text.textContent = String(value);
          const n = document.createElement("span");
          n.className = "count";
          n.textContent = count;
          label.append(box, text, n);
          fieldset.append(label);
        }
      } else {
        fieldset.append(selectInput(name, [["", "Any"], ...facet.values.map((v) => [v.value, `${v.value} (${v.count})`])]));
      }
      el.filterFields.append(fieldset);
    }
  }

  function numberInput(name, bound, placeholder) {
    const id = `f-${name}-${bound}`;
    const wrap = document.createElement("div");
    wrap.className = "range-input";
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = bound === "min" ? "Min" : "Max";
    const input = document.createElement("input");
    input.type = "number";
    input.inputMode = "decimal";
    input.step = "any";
    input.id = id;
    input.dataset.bound = bound;
    if (placeholder !== null && placeholder !== undefined) input.placeholder = String(placeholder);
    wrap.append(label, input);
    return wrap;
  }

  function selectInput(name, options) {
    const id = `f-${name}`;
    const wrap = document.createElement("div");
    const label = document.createElement("label");
    label.htmlFor = id;
    label.className = "visually-hidden";
    label.textContent = name;
    const select = document.createElement("select");
    select.id = id;
    for (const [value, text] of options) select.append(new Option(text, value));
    wrap.append(label, select);
    return wrap;
  }

  function readFilters() {
    const filters = {};
    for (const fieldset of el.filterFields.querySelectorAll("fieldset")) {
      const name = fieldset.dataset.field;
      const type = fieldset.dataset.type;
      if (type === "number") {
        const range = {};
        for (const input of fieldset.querySelectorAll("input")) {
          if (input.value !== "" && Number.isFinite(input.valueAsNumber)) {
            range[input.dataset.bound === "min" ? "gte" : "lte"] = input.valueAsNumber;
          }
        }
        if (Object.keys(range).length) filters[name] = range;
      } else if (fieldset.querySelector("select")) {
        const value = fieldset.querySelector("select").value;
        if (value !== "") filters[name] = type === "boolean" ? value === "true" : value;
      } else {
        const values = [...fieldset.querySelectorAll("input:checked")].map((b) => b.value);
        if (values.length) filters[name] = values.length === 1 ? values[0] : values;
      }
    }
    return filters;
  }

  function onFiltersChanged() {
    state.filters = readFilters();
    const n = Object.keys(state.filters).length;
    el.filterCount.hidden = n === 0;
    el.filterCount.textContent = `${n} on`;
    el.clearFilters.hidden = n === 0;
    state.offset = 0;
    if (hasQuery() && state.searched) runSearch();
  }

  // ------------------------------------------------------------------ wiring

  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    state.text = el.q.value.trim();
    state.similar = null;
    state.offset = 0;
    runSearch();
  });

  el.q.addEventListener("input", updateMix);
  el.mode.addEventListener("change", () => {
    if (hasQuery() && state.searched && !state.similar) {
      state.offset = 0;
      runSearch();
    }
  });
  el.q.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && el.q.value) {
      el.q.value = "";
      updateMix();
    }
  });
  el.mixRange.addEventListener("input", () => {
    const image = Number(el.mixRange.value);
    el.mixRange.setAttribute("aria-valuetext", `${100 - image}% text, ${image}% image`);
  });
  el.mixRange.addEventListener("change", () => { if (state.text && state.image) runSearch(); });

  el.imageButton.addEventListener("click", () => el.imageInput.click());
  el.imageInput.addEventListener("change", () => setImage(el.imageInput.files[0]));
  el.imageRemove.addEventListener("click", () => {
    clearImage();
    el.q.focus();
  });

  // Paste an image anywhere (text pastes into the box as usual).
  document.addEventListener("paste", (event) => {
    const items = [...((event.clipboardData && event.clipboardData.items) || [])];
    const item = items.find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (item) {
      event.preventDefault();
      setImage(item.getAsFile());
    }
  });

  // Drag and drop anywhere on the page.
  let dragDepth = 0;
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    dragDepth += 1;
    el.overlay.hidden = false;
    el.dropZone.classList.add("is-drop-target");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) {
      el.overlay.hidden = true;
      el.dropZone.classList.remove("is-drop-target");
    }
  });
  document.addEventListener("dragover", (event) => {
    if (hasFiles(event)) event.preventDefault();
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    el.overlay.hidden = true;
    el.dropZone.classList.remove("is-drop-target");
    setImage(event.dataTransfer.files[0]);
  });

  el.filtersForm.addEventListener("change", onFiltersChanged);
  el.filtersForm.addEventListener("submit", (event) => event.preventDefault());
  el.clearFilters.addEventListener("click", () => {
    el.filtersForm.reset();
    onFiltersChanged();
  });

  el.similarClear.addEventListener("click", () => {
    state.similar = null;
    state.offset = 0;
    if (hasQuery()) {
      runSearch();
    } else {
      el.similarBar.hidden = true;
      el.grid.replaceChildren();
      el.pager.hidden = true;
      el.status.textContent = "";
      el.welcome.hidden = false;
      el.q.focus();
    }
  });

  el.prev.addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    runSearch({ focusResults: true });
  });
  el.next.addEventListener("click", () => {
    state.offset += PAGE_SIZE;
    runSearch({ focusResults: true });
  });

  // Scrolling to results (focus, skip link) must land below the sticky header.
  const topbar = document.querySelector(".topbar");
  const syncTopbar = () => document.documentElement.style.setProperty(
    "--topbar-h", `${topbar.offsetHeight}px`);
  new ResizeObserver(syncTopbar).observe(topbar);
  syncTopbar();

  // Phones start with the filters folded away.
  if (window.matchMedia("(max-width: 760px)").matches) el.filtersDetails.open = false;

  function showExamples(examples) {
    el.examples.replaceChildren();
    for (const example of examples.slice(0, 4)) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "btn btn-small btn-chip";
      button.textContent = example;
      button.addEventListener("click", () => {
        el.q.value = example;
        el.form.requestSubmit();
      });
      el.examples.append(button);
    }
  }

  // Example searches: from config.js, else the most common catalog values.
  function examplesFromFacets(fields) {
    const keyword = Object.values(fields).filter((f) => f.type === "keyword" && f.values?.length);
    const out = [];
    for (let i = 0; i < 4; i += 1) {
      for (const facet of keyword) {
        const value = facet.values[i]?.value;
        if (value && out.length < 4 && !out.includes(String(value))) out.push(String(value));
      }
    }
    return out;
  }

  api("/health").then((health) => {
    const info = `${health.products.toLocaleString()} products · model ${health.model}`;
    el.catalogInfo.textContent = info;
    el.footerInfo.textContent = info;
  }).catch(() => {
    el.catalogInfo.textContent = "The search server is not answering.";
  });
  showExamples(CONFIG.examples || []);
  document.querySelector('.footer a[href="openapi.json"]').href =
    CONFIG.openapiUrl || `${API}/openapi.json`;
  loadFacets();
})();
