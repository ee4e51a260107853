// Lesion masks over one viewport, toggled per lesion. Segmented lesions are semi-transparent
// fills. The true mask of a synthetic case is a solid cyan outline with a faint fill.

const cornerstone = window.cornerstone;
const COLORS = ["#ff3b30", "#ffcc00", "#34c759", "#0a84ff", "#bf5af2", "#ff9f0a"];
const TRUTH_COLOR = "#00e5ff";

export class LesionOverlay {
  // style: "fill" (segmented lesions) or "outline" (true mask).
  constructor(viewport, data, stateBox, style = "fill") {
    this.viewport = viewport;
    this.lesions = data.lesions; // {label: {z: [[row, column, length], ...]}}
    this.hidden = new Set();
    this.stateBox = stateBox;
    this.style = style;
    this.outlines = new Map(); // "label/z" -> Path2D of the lesion's edge on that slice
    // Mask slice z is the z-th instance in ascending slice position, as the loader sorts them.
    // NOTE: a series the loader resampled (gaps, tilt) has a mask of another slice count and
    // is reported below rather than drawn on the nearest slices.
    if (data.shapeZyx[0] !== viewport.imageIds.length) {
      this.report(
        `The lesion mask has ${data.shapeZyx[0]} slices but the series shows ` +
          `${viewport.imageIds.length}; the overlay is not drawn.`,
      );
      this.lesions = {};
    }
    viewport.element.addEventListener("cornerstoneimagerendered", (event) => this.draw(event.detail));
    cornerstone.updateImage(viewport.element);
  }

  report(message) {
    if (this.stateBox) this.stateBox.textContent = message;
  }

  setVisible(label, visible) {
    if (visible) this.hidden.delete(String(label));
    else this.hidden.add(String(label));
    cornerstone.updateImage(this.viewport.element);
  }

  // Return the slice index with the most pixels of the lesion, or -1 when it has none.
  largestSlice(label) {
    const slices = this.lesions[String(label)] || {};
    let best = -1;
    let bestCount = -1;
    for (const [z, runs] of Object.entries(slices)) {
      const count = runs.reduce((sum, run) => sum + run[2], 0);
      if (count > bestCount) {
        best = Number(z);
        bestCount = count;
      }
    }
    return best;
  }

  draw(detail) {
    const z = String(this.viewport.index);
    const context = detail.canvasContext;
    context.save();
    cornerstone.setToPixelCoordinateSystem(detail.enabledElement, context);
    if (this.style === "outline") {
      this.drawOutlines(context, z, detail.viewport.scale || 1);
      context.restore();
      return;
    }
    context.globalAlpha = 0.4;
    for (const [label, slices] of Object.entries(this.lesions)) {
      if (this.hidden.has(label) || !slices[z]) continue;
      context.fillStyle = COLORS[(Number(label) - 1) % COLORS.length];
      for (const [row, column, length] of slices[z]) {
        context.fillRect(column, row, length, 1);
      }
    }
    context.restore();
  }

  drawOutlines(context, z, scale) {
    // Line width in screen pixels, whatever the zoom. No dashes: the outline is many short
    // pixel edges, and a dash pattern restarts on each, so it would look solid anyway.
    context.lineWidth = 2 / scale;
    context.strokeStyle = TRUTH_COLOR;
    context.fillStyle = TRUTH_COLOR;
    for (const [label, slices] of Object.entries(this.lesions)) {
      if (this.hidden.has(label) || !slices[z]) continue;
      context.globalAlpha = 0.15;
      for (const [row, column, length] of slices[z]) context.fillRect(column, row, length, 1);
      context.globalAlpha = 1;
      context.stroke(this.outline(label, z, slices[z]));
    }
  }

  // The edges between the lesion's pixels and the rest of the slice, built once per slice.
  outline(label, z, runs) {
    const key = `${label}/${z}`;
    if (this.outlines.has(key)) return this.outlines.get(key);
    const rows = new Map(); // row -> Set of columns
    for (const [row, column, length] of runs) {
      if (!rows.has(row)) rows.set(row, new Set());
      for (let x = column; x < column + length; x += 1) rows.get(row).add(x);
    }
    const path = new Path2D();
    const inside = (row, x) => rows.has(row) && rows.get(row).has(x);
    for (const [row, column, length] of runs) {
      // Left and right ends: runs end where the label changes.
      path.moveTo(column, row);
      path.lineTo(column, row + 1);
      path.moveTo(column + length, row);
      path.lineTo(column + length, row + 1);
      // Top and bottom edges, joined into one line per stretch without a neighbour.
      for (const [edgeRow, neighbour] of [[row, row - 1], [row + 1, row + 1]]) {
        let start = -1;
        for (let x = column; x <= column + length; x += 1) {
          const open = x < column + length && !inside(neighbour, x);
          if (open && start < 0) start = x;
          if (!open && start >= 0) {
            path.moveTo(start, edgeRow);
            path.lineTo(x, edgeRow);
            start = -1;
          }
        }
      }
    }
    this.outlines.set(key, path);
    return path;
  }
}

// Connect the panel's show boxes and jump buttons (found by selector) to one overlay layer.
export function bindLesionControls(overlay, target, toggleSelector, jumpSelector) {
  for (const toggle of document.querySelectorAll(toggleSelector)) {
    toggle.addEventListener("change", () => overlay.setVisible(toggle.dataset.label, toggle.checked));
  }
  for (const button of document.querySelectorAll(jumpSelector)) {
    button.addEventListener("click", () => {
      const index = overlay.largestSlice(button.dataset.label);
      if (index >= 0) target.show(index);
    });
  }
}
