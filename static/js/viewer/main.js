// Review page: two stack viewports (baseline, follow-up) with shared window/level, synchronized
// scrolling by slice position, tools, HU probe, lesion overlay and keyboard shortcuts.
import { bindLesionControls, LesionOverlay } from "./overlay.js";
import { PRESET_KEYS, WINDOW_PRESETS } from "./presets.js";
import { StackViewport } from "./viewport.js";

const cornerstone = window.cornerstone;
const cornerstoneTools = window.cornerstoneTools;
const loader = window.cornerstoneWADOImageLoader;

function initLibraries() {
  loader.external.cornerstone = cornerstone;
  loader.external.dicomParser = window.dicomParser;
  // The 4.13.2 bundle starts its decode workers from an inline Blob, codecs included, so no
  // worker path is configured; see static/vendor/MANIFEST.md.
  loader.webWorkerManager.initialize({
    maxWebWorkers: Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 4)),
    startWebWorkersOnDemand: true,
    taskConfiguration: { decodeTask: { initializeCodecsOnStartup: false, strict: false } },
  });
  cornerstoneTools.external.cornerstone = cornerstone;
  cornerstoneTools.external.cornerstoneMath = window.cornerstoneMath;
  cornerstoneTools.external.Hammer = window.Hammer;
  // Global tool sync adds the tools below to viewports enabled after this call.
  cornerstoneTools.init({ showSVGCursors: false, globalToolSyncEnabled: true });
  for (const tool of ["WwwcTool", "PanTool", "ZoomTool", "LengthTool"]) {
    cornerstoneTools.addTool(cornerstoneTools[tool]);
  }
}

function selectTool(name) {
  for (const tool of ["Wwwc", "Pan", "Zoom", "Length"]) {
    if (tool !== name) cornerstoneTools.setToolPassive(tool);
  }
  cornerstoneTools.setToolActive(name, { mouseButtonMask: 1 });
  // Middle button pans and right button zooms whatever the left button does.
  if (name !== "Pan") cornerstoneTools.setToolActive("Pan", { mouseButtonMask: 4 });
  if (name !== "Zoom") cornerstoneTools.setToolActive("Zoom", { mouseButtonMask: 2 });
  for (const button of document.querySelectorAll("[data-tool]")) {
    button.setAttribute("aria-pressed", String(button.dataset.tool === name));
  }
}

class ReviewViewer {
  constructor(root, config) {
    this.root = root;
    this.config = config;
    this.viewports = [];
    this.syncing = false;
    this.overlay = null;
    this.truthOverlay = null;
    this.firstImageMs = null;
    this.prefetched = false;
  }

  async start() {
    const wadoUrl = this.root.dataset.wadoUrl;
    for (const study of this.config.studies) {
      const element = this.root.querySelector(`.viewport[data-role="${study.role}"]`);
      if (!element || study.status !== "ok") continue;
      const viewport = new StackViewport(element, study, wadoUrl);
      this.viewports.push(viewport);
      this.bindViewport(viewport);
    }
    if (this.viewports.length) selectTool("Wwwc");
    // The server renders each slider at the initial slice, so slider and image agree from the start.
    await Promise.all(
      this.viewports.map((viewport) => viewport.show(viewport.initialIndex(), { notify: false })),
    );
    for (const viewport of this.viewports) this.updateSlider(viewport);
    this.firstImageMs = performance.now();
    this.root.dataset.firstImage = "shown";
    await Promise.all(this.viewports.map((viewport) => viewport.prefetch()));
    this.prefetched = true;
    this.root.dataset.prefetched = "done";
    await this.loadOverlay();
    await this.loadTruthOverlay();
  }

  byRole(role) {
    return this.viewports.find((viewport) => viewport.role === role);
  }

  sliderOf(viewport) {
    return this.root.querySelector(`input[type=range][data-role="${viewport.role}"]`);
  }

  // Sliders count slices from 1, as the info line and the lesion table do.
  updateSlider(viewport) {
    const slider = this.sliderOf(viewport);
    if (!slider || viewport.index < 0) return;
    slider.value = String(viewport.index + 1);
    slider.setAttribute("aria-valuetext", `Slice ${viewport.index + 1} of ${viewport.imageIds.length}`);
  }

  bindViewport(viewport) {
    const element = viewport.element;
    const slider = this.sliderOf(viewport);
    const probeOutput = this.root.querySelector(`.hu-probe[data-role="${viewport.role}"]`);
    element.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        viewport.scrollBy(event.deltaY > 0 ? 1 : -1);
      },
      { passive: false },
    );
    element.addEventListener("keydown", (event) => {
      const steps = { ArrowDown: 1, ArrowRight: 1, PageDown: 5, ArrowUp: -1, ArrowLeft: -1, PageUp: -5 };
      if (event.key in steps) {
        event.preventDefault();
        viewport.scrollBy(steps[event.key]);
      }
    });
    if (slider) slider.addEventListener("input", () => viewport.show(Number(slider.value) - 1));
    element.addEventListener("mousemove", (event) => {
      const probe = viewport.probe(event.pageX, event.pageY);
      probeOutput.textContent = probe
        ? `HU ${Math.round(probe.hu)} at column ${probe.x}, row ${probe.y}`
        : "HU: outside the image";
      if (probe) probeOutput.dataset.hu = String(probe.hu);
    });
    viewport.onSliceChange((source) => {
      this.updateSlider(source);
      this.synchronize(source);
    });
    element.addEventListener("cornerstoneimagerendered", () => {
      this.shareVoi(viewport);
      if (viewport === this.viewports[0]) updatePresetButtons(viewport.getVoi());
    });
  }

  // Show the slice nearest in position on the other viewports.
  synchronize(source) {
    if (this.syncing || !document.getElementById("sync-scroll")?.checked) return;
    const position = source.positionMm();
    if (position === null || position === undefined) return;
    this.syncing = true;
    for (const viewport of this.viewports) {
      if (viewport === source) continue;
      const index = viewport.nearestIndex(position);
      if (index >= 0 && index !== viewport.index) {
        viewport.show(index, { notify: false }).then(() => this.updateSlider(viewport));
      }
    }
    this.syncing = false;
  }

  shareVoi(source) {
    const voi = source.getVoi();
    if (!voi) return;
    for (const viewport of this.viewports) {
      if (viewport === source || !viewport.image) continue;
      const other = viewport.getVoi();
      if (other && (other.level !== voi.level || other.width !== voi.width)) {
        viewport.setVoi(voi.level, voi.width);
      }
    }
  }

  applyPreset(name) {
    const preset = WINDOW_PRESETS[name];
    for (const viewport of this.viewports) viewport.setVoi(preset.level, preset.width);
    updatePresetButtons(preset);
  }

  async loadOverlay() {
    const url = this.root.dataset.overlayUrl;
    const stateBox = document.getElementById("overlay-state");
    const target = this.byRole(this.config.lesionStudyRole) || this.viewports[0];
    if (!url || !target) return;
    if (stateBox) stateBox.textContent = "Loading lesion overlay…";
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin" });
    } catch (error) {
      if (stateBox) stateBox.textContent = `Lesion overlay failed to load: ${error.message}`;
      return;
    }
    const data = await response.json();
    if (!response.ok) {
      if (stateBox) stateBox.textContent = `Lesion overlay unavailable: ${data.error}`;
      return;
    }
    if (stateBox) stateBox.textContent = "";
    this.overlay = new LesionOverlay(target, data, stateBox);
    this.root.dataset.overlay = "ready";
    bindLesionControls(this.overlay, target, ".lesion-toggle", ".lesion-jump");
  }

  // The true mask of a synthetic case: a layer of its own, in the server's config only when
  // the user may see the ground truth.
  async loadTruthOverlay() {
    const url = this.config.truthOverlayUrl;
    const stateBox = document.getElementById("truth-overlay-state");
    const target = this.byRole(this.config.truthStudyRole);
    if (!url || !target) return;
    let data;
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      data = await response.json();
      if (!response.ok) throw new Error(data.error);
    } catch (error) {
      if (stateBox) stateBox.textContent = `True mask unavailable: ${error.message}`;
      return;
    }
    this.truthOverlay = new LesionOverlay(target, data, stateBox, "outline");
    this.root.dataset.truthOverlay = "ready";
    bindLesionControls(this.truthOverlay, target, ".truth-toggle", ".truth-jump");
  }
}

// Mark the preset whose window equals the shown one; none after a drag with window/level.
function updatePresetButtons(voi) {
  for (const button of document.querySelectorAll("[data-preset]")) {
    const preset = WINDOW_PRESETS[button.dataset.preset];
    const active = Boolean(voi) && voi.level === preset.level && voi.width === preset.width;
    button.setAttribute("aria-pressed", String(active));
  }
}

function bindControls(viewer) {
  for (const button of document.querySelectorAll("[data-preset]")) {
    button.addEventListener("click", () => viewer.applyPreset(button.dataset.preset));
  }
  for (const button of document.querySelectorAll("[data-tool]")) {
    button.addEventListener("click", () => selectTool(button.dataset.tool));
  }
  document.querySelector('[data-action="reset"]')?.addEventListener("click", () => {
    for (const viewport of viewer.viewports) viewport.reset();
  });
  document.addEventListener("keydown", (event) => handleShortcut(viewer, event));
}

function handleShortcut(viewer, event) {
  const typing = event.target.closest("input[type=text], input[type=number], textarea, select");
  if (event.altKey && /^[1-4]$/.test(event.key)) {
    event.preventDefault();
    viewer.applyPreset(PRESET_KEYS[Number(event.key) - 1]);
    return;
  }
  const form = document.getElementById("adjudication-form");
  if ((event.ctrlKey || event.metaKey) && event.key === "Enter" && form) {
    event.preventDefault();
    form.requestSubmit();
    return;
  }
  if (typing || event.altKey || event.ctrlKey || event.metaKey) return;
  if (/^[1-3]$/.test(event.key) && form) {
    const radios = form.querySelectorAll('input[name="label"]');
    radios[Number(event.key) - 1]?.click();
  } else if (event.key === "n" || event.key === "N") {
    const next = document.getElementById("next-unread") || document.getElementById("next-case");
    if (next) window.location.assign(next.href);
  } else if (!event.target.closest(".viewport") && (event.key === "ArrowDown" || event.key === "ArrowUp")) {
    const viewport = viewer.viewports[0];
    if (viewport) {
      event.preventDefault();
      viewport.scrollBy(event.key === "ArrowDown" ? 1 : -1);
    }
  }
}

const root = document.getElementById("viewer");
const configElement = document.getElementById("viewer-config");
if (root && configElement) {
  const viewer = new ReviewViewer(root, JSON.parse(configElement.textContent));
  window.cehtViewer = viewer;
  try {
    initLibraries();
    bindControls(viewer);
    viewer.start().catch((error) => {
      root.dataset.error = String(error);
      for (const box of root.querySelectorAll(".viewport-state")) {
        box.hidden = false;
        box.textContent = `The viewer failed: ${error.message || error}`;
      }
    });
  } catch (error) {
    for (const box of root.querySelectorAll(".viewport-state")) {
      box.hidden = false;
      box.textContent = `The viewer could not start: ${error.message}`;
    }
  }
}
