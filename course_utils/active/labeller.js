// The keyboard-first labeller's front end (an anywidget ES module; Python side: labeller.Labeller).
// Keys 1-9 label the large image and advance, u or Backspace undoes, n skips. Each action is sent to
// Python, which writes it to SQLite and answers with the next state; until then keys are ignored, so a
// key pressed while a write is in flight can never label twice.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") el.style.cssText = v; else el.setAttribute(k, v);
  }
  for (const c of children) el.append(c);
  return el;
}

function render({ model, el }) {
  const root = h("div", { class: "course-labeller", tabindex: "0", "data-lm-suppress-shortcuts": "true",
    style: "outline:none;font-family:sans-serif;max-width:760px;padding:6px;border:1px solid #ccc;border-radius:6px" });
  el.append(root);
  let busy = false;
  let sentAt = 0;

  const send = (msg) => {
    if (busy) { model.set("js_ignored", (model.get("js_ignored") || 0) + 1); model.save_changes(); return; }
    busy = true;
    sentAt = performance.now();
    root.style.opacity = "0.75";
    model.send({ ...msg, item: model.get("state").item });
  };

  // Whether the keys reach the labeller must be visible: a blue ring and a green line when it has the keyboard,
  // a yellow "click here" line when it has not (then 1-9 go to JupyterLab, where 1 turns a cell into a heading).
  const showFocus = () => {
    const has = root.contains(document.activeElement);
    root.dataset.focused = has ? "true" : "false";
    root.style.borderColor = has ? "#1a73e8" : "#ccc";
    root.style.boxShadow = has ? "0 0 0 3px rgba(26,115,232,0.45)" : "none";
    const line = root.querySelector(".course-labeller-focus");
    if (!line) return;
    line.textContent = has ? "Keys go to the labeller: 1-9 label, u undoes, n skips"
                           : "Click here to label with the keys (until then they go to JupyterLab)";
    line.style.background = has ? "#e6f4ea" : "#fff4ce";
  };
  root.addEventListener("focusin", showFocus);
  root.addEventListener("focusout", () => setTimeout(showFocus, 0));   // after focus has moved on

  const draw = () => {
    const s = model.get("state") || {};
    busy = false;
    root.style.opacity = "1";
    root.replaceChildren();
    root.append(h("div", { class: "course-labeller-focus", style: "padding:2px 6px;margin-bottom:4px;" +
      "border-radius:4px;font-size:13px;cursor:pointer" }));
    root.append(h("div", { style: "font-weight:bold;margin-bottom:4px" },
      "Label the image: keys " + (s.class_names || []).map((n, i) => `${i + 1} = ${n}`).join(", ") +
      " · u / Backspace = undo · n = skip"));
    const row = h("div", { style: "display:flex;gap:12px;align-items:flex-start" });
    const main = h("div", {});
    if (s.image) main.append(h("img", { src: s.image, class: "course-labeller-image", alt: `image ${s.item}`,
      style: "width:256px;height:256px;image-rendering:pixelated;border:1px solid #999" }));
    else main.append(h("div", { style: "width:256px;padding:40px 8px" }, s.message || "nothing to label"));
    row.append(main);
    const side = h("div", { style: "flex:1;min-width:220px" });
    if (s.item !== null && s.item !== undefined) {
      side.append(h("div", {}, `image id ${s.item}`));
      if (s.reason) side.append(h("div", { style: "color:#555" }, s.reason));
      if (s.label_confidences && s.label_confidences.length) side.append(h("div", { style: "color:#555" },
        "model per label: " + s.label_confidences.map(([n, p]) => `${n} ${(100 * p).toFixed(0)} %`).join(", ")));
      const conf = s.confidences || [];
      (s.class_names || []).forEach((name, i) => {
        const b = h("button", { class: "course-labeller-class", "data-label": String(i),
          style: "display:block;width:100%;text-align:left;margin:2px 0;padding:4px;cursor:pointer" },
          `${i + 1}  ${name}` + (conf.length ? `  (model: ${(100 * conf[i]).toFixed(0)} %)` : ""));
        b.addEventListener("click", () => { send({ action: "label", label: i }); root.focus(); });
        side.append(b);
      });
    }
    const tools = h("div", { style: "margin-top:6px" });
    for (const [action, text] of [["undo", "Undo (u)"], ["skip", "Skip (n)"]]) {
      const b = h("button", { class: `course-labeller-${action}`, style: "margin-right:6px" }, text);
      b.addEventListener("click", () => { send({ action }); root.focus(); });
      tools.append(b);
    }
    side.append(tools);
    row.append(side);
    root.append(row);
    const thumbs = h("div", { style: "margin-top:6px;display:flex;gap:4px;align-items:center" }, "next: ");
    for (const t of s.thumbs || []) thumbs.append(h("img", { src: t, style: "width:48px;height:48px;image-rendering:pixelated" }));
    root.append(thumbs);
    root.append(h("div", { class: "course-labeller-counter", style: "margin-top:4px" }, s.counter || ""));
    if (s.message && s.image) root.append(h("div", { style: "color:#555" }, s.message));
    if (s.error) {
      const box = h("div", { class: "course-labeller-error", style: "color:#b00020;margin-top:4px" }, s.error);
      if (s.error_detail) box.append(h("details", {}, h("summary", {}, "details"), h("pre", { style: "font-size:11px" }, s.error_detail)));
      root.append(box);
    }
    if (sentAt) {                       // key press -> this state drawn: kept for the tests and the curious
      const ms = performance.now() - sentAt;
      root.dataset.latencyMs = ms.toFixed(1);
      model.set("js_latency_ms", ms);
      model.save_changes();
      sentAt = 0;
    }
  };

  root.addEventListener("keydown", (e) => {
    const s = model.get("state") || {};
    const n = (s.class_names || []).length;
    let msg = null;
    if (/^[1-9]$/.test(e.key)) msg = { action: "label", label: Number(e.key) - 1, key: e.key, n };
    else if (e.key === "u" || e.key === "U" || e.key === "Backspace") msg = { action: "undo" };
    else if (e.key === "n" || e.key === "N") msg = { action: "skip" };
    if (!msg) return;
    e.preventDefault();
    e.stopPropagation();   // keep JupyterLab's own shortcuts (1 = heading, ...) from seeing the key
    send(msg);
  });
  root.addEventListener("click", () => root.focus());
  model.on("change:state", () => { draw(); showFocus(); });
  draw();
  showFocus();
}

export default { render };
