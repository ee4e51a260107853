// One stack viewport: loads a series through WADO-URI, scrolls, probes HU and shows its state.
import { orientationMarkers } from "./orientation.js";

const cornerstone = window.cornerstone;

export class StackViewport {
  constructor(element, study, wadoUrl) {
    this.element = element;
    this.study = study;
    this.role = study.role;
    this.instances = study.instances || [];
    this.imageIds = this.instances.map(
      (instance) =>
        `wadouri:${wadoUrl}?requestType=WADO&studyUID=${encodeURIComponent(study.studyUid)}` +
        `&seriesUID=${encodeURIComponent(study.seriesUid)}` +
        `&objectUID=${encodeURIComponent(instance.uid)}&contentType=application%2Fdicom`,
    );
    this.index = -1;
    this.requestedIndex = -1;
    this.image = null;
    this.failures = new Map();
    this.loaded = 0;
    this.listeners = [];
    this.stateBox = element.querySelector(".viewport-state");
    this.infoBox = element.querySelector(".viewport-info");
    this.markers = {};
    for (const side of ["top", "bottom", "left", "right"]) {
      this.markers[side] = element.querySelector(`.marker-${side}`);
    }
    cornerstone.enable(element);
    element.addEventListener("cornerstoneimagerendered", () => this.updateInfo());
  }

  // Index of the slice shown first: the one the server chose, else the middle slice.
  initialIndex() {
    const chosen = this.study.initialSlice;
    return Number.isInteger(chosen) ? chosen - 1 : Math.floor(this.imageIds.length / 2);
  }

  onSliceChange(listener) {
    this.listeners.push(listener);
  }

  setState(message, kind) {
    this.stateBox.textContent = message;
    this.stateBox.dataset.kind = kind || "";
    this.stateBox.hidden = !message;
  }

  // Show slice ``index``; resolves when it is on screen, or after its failure is shown.
  async show(index, { notify = true } = {}) {
    if (!this.imageIds.length) return;
    const target = Math.max(0, Math.min(this.imageIds.length - 1, index));
    this.requestedIndex = target;
    let image;
    try {
      image = await cornerstone.loadAndCacheImage(this.imageIds[target]);
    } catch (error) {
      const reason = describeError(error);
      this.failures.set(target, reason);
      if (this.requestedIndex === target) {
        this.index = target;
        this.image = null;
        this.setState(`Image ${target + 1} of ${this.imageIds.length} could not be decoded: ${reason}`, "error");
        this.notify(notify);
      }
      return;
    }
    // A later request overtook this one while it loaded; drop the stale image.
    if (this.requestedIndex !== target) return;
    this.index = target;
    this.image = image;
    cornerstone.displayImage(this.element, image);
    this.setState("", "");
    this.notify(notify);
  }

  notify(enabled) {
    if (!enabled) return;
    for (const listener of this.listeners) listener(this);
  }

  scrollBy(step) {
    return this.show((this.index < 0 ? 0 : this.index) + step);
  }

  // Load every slice into cornerstone's image cache, so scrolling after this waits for no request.
  prefetch(onProgress) {
    return Promise.all(
      this.imageIds.map((imageId, index) =>
        cornerstone
          .loadAndCacheImage(imageId)
          .then(() => {
            this.loaded += 1;
            if (onProgress) onProgress(this);
          })
          .catch((error) => {
            this.failures.set(index, describeError(error));
          }),
      ),
    );
  }

  positionMm(index = this.index) {
    const instance = this.instances[index];
    return instance ? instance.positionMm : null;
  }

  nearestIndex(positionMm) {
    let best = -1;
    let bestDistance = Infinity;
    this.instances.forEach((instance, index) => {
      const distance = Math.abs(instance.positionMm - positionMm);
      if (distance < bestDistance) {
        best = index;
        bestDistance = distance;
      }
    });
    return best;
  }

  // Return {x, y, hu} for the stored pixel under a page position, or null outside the image.
  probe(pageX, pageY) {
    if (!this.image) return null;
    const point = cornerstone.pageToPixel(this.element, pageX, pageY);
    const x = Math.floor(point.x);
    const y = Math.floor(point.y);
    if (x < 0 || y < 0 || x >= this.image.columns || y >= this.image.rows) return null;
    return { x, y, hu: this.huAt(x, y) };
  }

  huAt(x, y) {
    const stored = this.image.getPixelData()[y * this.image.columns + x];
    return stored * (this.image.slope ?? 1) + (this.image.intercept ?? 0);
  }

  getVoi() {
    const viewport = cornerstone.getViewport(this.element);
    return viewport ? { level: viewport.voi.windowCenter, width: viewport.voi.windowWidth } : null;
  }

  setVoi(level, width) {
    const viewport = cornerstone.getViewport(this.element);
    if (!viewport) return;
    viewport.voi.windowCenter = level;
    viewport.voi.windowWidth = width;
    cornerstone.setViewport(this.element, viewport);
  }

  reset() {
    if (this.image) cornerstone.reset(this.element);
  }

  updateInfo() {
    if (!this.image) return;
    const voi = this.getVoi();
    const position = this.positionMm();
    const thickness = this.study.sliceThicknessMm;
    this.infoBox.textContent =
      `Slice ${this.index + 1}/${this.imageIds.length}` +
      (position === null ? "" : ` · ${position.toFixed(1)} mm`) +
      (thickness ? ` · thickness ${thickness} mm` : "") +
      (voi ? ` · L${Math.round(voi.level)}/W${Math.round(voi.width)}` : "");
    const plane = cornerstone.metaData.get("imagePlaneModule", this.image.imageId) || {};
    const markers = orientationMarkers(plane.rowCosines, plane.columnCosines);
    for (const side of Object.keys(this.markers)) {
      this.markers[side].textContent = markers ? markers[side] : "";
    }
  }
}

function describeError(error) {
  if (!error) return "unknown error";
  if (error.error && error.error.message) return error.error.message;
  if (error.message) return error.message;
  if (error.request && error.request.status) return `HTTP ${error.request.status}`;
  return String(error);
}
